"""The hooks a plugin can implement. Each receives a `register` callback (as in simonw/llm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moltis_desktop.core.hooks import hookspec


@hookspec
def register_providers(register: Callable[[Any], None]) -> None:
    """Register provider kinds: call `register(ProviderSpec(...))` for each."""


@hookspec
def register_tools(register: Callable[[Any], None]) -> None:
    """Register agent tools: call `register(tool)` for each (see `agent.tools.Tool`)."""
