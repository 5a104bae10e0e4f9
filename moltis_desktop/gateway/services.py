"""The agent side as the gateway sees it, once the runtime has loaded it."""

from __future__ import annotations

from dataclasses import dataclass

from moltis_desktop.agent.service import ChatService
from moltis_desktop.plugins.manager import PluginReport
from moltis_desktop.providers.models import Models


@dataclass(frozen=True)
class AgentServices:
    """The chat service, the models in effect and what the plugins gave."""

    chat: ChatService
    models: Models
    plugins: PluginReport
