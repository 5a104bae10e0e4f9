"""The session tools: list this agent's conversations, read one, and send a message into
another (its agent answers there, through the same `agent.ask` path as every ingress)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from moltis_desktop.agent.ask import submit
from moltis_desktop.agent.service import CHAT
from moltis_desktop.agent.tools import ToolContext, ToolError, tool
from moltis_desktop.agent.transcript import text_of
from moltis_desktop.sessions.store import SESSIONS


@tool(requires=(SESSIONS,))
async def sessions_list(
    ctx: ToolContext,
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20,
    search: Annotated[str, msgspec.Meta(description="text to look for in keys and labels")] = "",
) -> list[dict[str, Any]]:
    """List recent conversations (sessions) of this agent: key, label, last update, size."""
    store = ctx.service(SESSIONS)
    entries = store.list(agent_id=ctx.agent_id, limit=limit, search=search or None)
    return [
        {"key": e.key, "label": e.label, "updatedAt": e.updated_at, "messages": e.message_count}
        for e in entries
    ]


@tool(requires=(SESSIONS,))
async def sessions_history(
    ctx: ToolContext,
    session_key: Annotated[str, msgspec.Meta(description="the session's key, from sessions_list")],
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 20,
) -> list[dict[str, Any]]:
    """Read the last messages of a session (role and text)."""
    store = ctx.service(SESSIONS)
    if store.entry(session_key) is None:
        raise ToolError(f"no session {session_key!r}; see sessions_list")
    out = []
    for entry in store.history(session_key, limit=limit):
        message = entry.get("message") if entry.get("type") == "message" else None
        if not message:
            continue
        out.append({"role": message.get("role"), "text": text_of(message.get("content"))})
    return out


@tool(requires=(CHAT,))
async def sessions_send(
    ctx: ToolContext,
    session_key: Annotated[str, msgspec.Meta(description="the session to send to")],
    message: Annotated[str, msgspec.Meta(min_length=1)],
) -> dict[str, Any]:
    """Send a message into another session, as if its user had written it; the other
    session's agent answers there. Returns the run id."""
    if session_key == ctx.session_key:
        raise ToolError("a session cannot send to itself")
    turn = await submit(
        ctx.service(CHAT),
        message,
        session_key=session_key,
        extra_system_prompt=f"This message was sent by the agent of session {ctx.session_key}.",
        interpret_commands=False,
    )
    turn.close()  # it answers there; this turn only needs its id
    if turn.run is None:
        raise ToolError("the message was empty")
    return {"ok": True, "runId": turn.run_id, "sessionKey": session_key}
