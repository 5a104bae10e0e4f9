"""What the gateway's agent methods use, wired by the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moltis_desktop.agent.service import ChatService


@dataclass
class AgentServices:
    """The agent side of the gateway (absent in a gateway built without it)."""

    chat: ChatService
    catalog: Any
    """The model catalogue (`providers.registry.ModelCatalog`)."""
    registry: Any
    """The provider registry (`providers.registry.ProviderRegistry`)."""
    plugins: list[str] = field(default_factory=list)
    plugin_errors: list[dict[str, Any]] = field(default_factory=list)
