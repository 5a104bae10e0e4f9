"""The built-in tools of this release (a plugin like any other): `current_time` and the
session tools. Exec, web, memory and cron tools arrive through the same hook later."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from moltis_desktop.agent.tools import Tool, ToolContext, ToolError, tool
from moltis_desktop.agent.transcript import text_of
from moltis_desktop.core.hooks import hookimpl


@tool()
async def current_time(
    ctx: ToolContext,
    timezone: Annotated[
        str, msgspec.Meta(description="IANA zone, e.g. Europe/Paris; default: the gateway's")
    ] = "",
) -> dict[str, Any]:
    """The current date and time (ISO 8601), the weekday and the time zone."""
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            now = datetime.datetime.now(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris"
            ) from None
    else:
        now = datetime.datetime.now().astimezone()
    return {
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "timezone": str(now.tzinfo),
    }


@tool()
async def sessions_list(
    ctx: ToolContext,
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20,
    search: Annotated[str, msgspec.Meta(description="text to look for in keys and labels")] = "",
) -> list[dict[str, Any]]:
    """List recent conversations (sessions) of this agent: key, label, last update, size."""
    store = ctx.service("sessions")
    entries = store.list(agent_id=ctx.agent_id, limit=limit, search=search or None)
    return [
        {"key": e.key, "label": e.label, "updatedAt": e.updated_at, "messages": e.message_count}
        for e in entries
    ]


@tool()
async def sessions_history(
    ctx: ToolContext,
    session_key: Annotated[str, msgspec.Meta(description="the session's key, from sessions_list")],
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 20,
) -> list[dict[str, Any]]:
    """Read the last messages of a session (role and text)."""
    store = ctx.service("sessions")
    if store.entry(session_key) is None:
        raise ToolError(f"no session {session_key!r}; see sessions_list")
    out = []
    for entry in store.history(session_key, limit=limit):
        message = entry.get("message") if entry.get("type") == "message" else None
        if not message:
            continue
        out.append({"role": message.get("role"), "text": text_of(message.get("content"))})
    return out


@tool()
async def sessions_send(
    ctx: ToolContext,
    session_key: Annotated[str, msgspec.Meta(description="the session to send to")],
    message: Annotated[str, msgspec.Meta(min_length=1)],
) -> dict[str, Any]:
    """Send a message into another session, as if its user had written it; the other
    session's agent answers there. Returns the run id."""
    if session_key == ctx.session_key:
        raise ToolError("a session cannot send to itself")
    send: Callable[..., Any] = ctx.service("send_to_session")
    run_id = await send(session_key, message, origin=ctx.session_key)
    return {"ok": True, "runId": run_id, "sessionKey": session_key}


BUILTIN_TOOLS: tuple[Tool, ...] = (current_time, sessions_list, sessions_history, sessions_send)


@hookimpl
def register_tools(register: Callable[[Tool], None]) -> None:
    for item in BUILTIN_TOOLS:
        register(item)
