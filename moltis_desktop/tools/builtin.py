"""The built-in tools, registered as a plugin like any other: `current_time`, the session
tools and `canvas` (offered where a canvas exists: the desktop app provides one). Exec, web,
memory and cron tools arrive through the same hook."""

from __future__ import annotations

from collections.abc import Callable

from moltis_desktop.agent.tools import Tool
from moltis_desktop.core.hooks import hookimpl
from moltis_desktop.tools.canvas import canvas
from moltis_desktop.tools.clock import current_time
from moltis_desktop.tools.sessions import sessions_history, sessions_list, sessions_send

BUILTIN_TOOLS: tuple[Tool, ...] = (
    current_time,
    sessions_list,
    sessions_history,
    sessions_send,
    canvas,
)


@hookimpl
def register_tools(register: Callable[[Tool], None]) -> None:
    for item in BUILTIN_TOOLS:
        register(item)
