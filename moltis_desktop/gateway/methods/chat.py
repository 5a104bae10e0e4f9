"""chat.send, chat.history, chat.abort, chat.inject, agent, agent.wait, agent.identity.get,
send: talking to the agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from moltis_desktop.gateway.registry import MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty, encode_ok

if TYPE_CHECKING:
    from moltis_desktop.agent.ask import Turn
    from moltis_desktop.agent.runs import Reply
    from moltis_desktop.agent.service import ChatService
    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable(events=("chat", "agent", "moltis.chat.setup"))


def _attachments(raw: Any) -> Any:
    from moltis_desktop.media.attachments import attachments_from

    return attachments_from(raw)


class ChatSendParams(msgspec.Struct, rename="camel"):
    """`chat.send` (OpenClaw has many more optional fields; they are accepted and ignored)."""

    session_key: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    message: str
    idempotency_key: NonEmpty
    agent_id: str | None = None
    thinking: str | None = None
    attachments: list[dict[str, Any]] | None = None
    timeout_ms: int | None = None
    deliver: bool | None = None
    suppress_command_interpretation: bool | None = None


def _existing(chat: ChatService, run_id: str) -> dict[str, Any] | None:
    run = chat.runs.get(run_id)
    if run is None:
        return None
    status = "in_flight" if run.outcome is None else run.status
    return {"runId": run_id, "status": status, "sessionKey": run.session_key}


@TABLE.method("chat.send", scope=Scope.WRITE, params=ChatSendParams)
async def chat_send(ctx: MethodContext, params: ChatSendParams) -> dict[str, Any]:
    """Send a message to a session; the reply streams as `chat` events. `runId` is the
    `idempotencyKey`; a repeat while it runs answers `in_flight`."""
    from moltis_desktop.agent.ask import submit

    chat = ctx.chat
    previous = _existing(chat, params.idempotency_key)
    if previous is not None:
        return previous
    turn = await submit(
        chat,
        params.message,
        session_key=params.session_key,
        agent_id=params.agent_id,
        run_id=params.idempotency_key,
        thinking=params.thinking,
        attachments=_attachments(params.attachments),
        channel="webchat",
        interpret_commands=not params.suppress_command_interpretation,
    )
    turn.close()  # the reply streams to every client through the chat event bridge
    _speak_reply(ctx, turn)
    status = "started" if turn.run is not None else "ok"
    return {"runId": params.idempotency_key, "status": status, "sessionKey": turn.session_key}


def _speak_reply(ctx: MethodContext, turn: Turn) -> None:
    """With `voice.tts.speak_chat_replies` on, the reply is spoken on this machine too.
    Not a spoken question's (`moltis voice listen` sends those as `voice-…` runs and speaks
    the reply itself)."""
    voice = ctx.state.voice
    if (
        voice is None
        or turn.run is None
        or not ctx.settings.voice.tts.speak_chat_replies
        or turn.run_id.startswith("voice-")
    ):
        return

    async def reply_text() -> str:
        reply = await turn.reply()
        return reply.text if reply.status == "ok" else ""

    voice.say_reply(reply_text)


class SetupGetParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    session_key: NonEmpty
    agent_id: str | None = None


@TABLE.method("moltis.chat.setup.get", scope=Scope.READ, params=SetupGetParams)
def chat_setup_get(ctx: MethodContext, params: SetupGetParams) -> dict[str, Any]:
    """The session's first-run notice, when its last run failed because nothing is set up
    to answer (what `moltis.chat.setup` said then); `notice` is null otherwise. A page
    opened after the failure (a reload, the tray's chat window) shows it from here."""
    from moltis_desktop.agent.loop import RunFailed
    from moltis_desktop.gateway.chat_events import setup_notice

    chat = ctx.chat
    key = chat.session_key(params.session_key, params.agent_id)
    run = chat.runs.latest(key)
    outcome = run.outcome if run is not None and run.done.is_set() else None
    if isinstance(outcome, RunFailed) and outcome.kind == "setup":
        assert run is not None
        return {"sessionKey": key, "notice": setup_notice(run.ref, outcome, run.finished_at_ms)}
    return {"sessionKey": key, "notice": None}


class ChatHistoryParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    session_key: NonEmpty
    agent_id: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 200
    cursor: str | None = None
    offset: int | None = None
    max_chars: int | None = None
    session_id: str | None = None
    message_id: str | None = None
    pending_before: int | None = None
    input_run_ids: list[str] | None = None


def _price(body: dict[str, Any], prices: Any) -> None:
    """Add `usage.cost.total` (US dollars, pi-ai's shape) to an assistant message that
    records its model and usage."""
    usage, model = body.get("usage"), body.get("model")
    if body.get("role") != "assistant" or not isinstance(usage, dict) or not model:
        return
    from moltis_desktop.providers.base import Usage
    from moltis_desktop.providers.pricing import cost

    provider = body.get("provider")
    ref = model if "/" in model or not provider else f"{provider}/{model}"
    tokens = Usage(
        int(usage.get("input") or 0),
        int(usage.get("output") or 0),
        int(usage.get("cacheRead") or 0),
        int(usage.get("cacheWrite") or 0),
    )
    body["usage"] = {**usage, "cost": {"total": round(cost(ref, tokens, prices), 6)}}


@TABLE.method("chat.history", scope=Scope.READ, params=ChatHistoryParams)
def chat_history(ctx: MethodContext, params: ChatHistoryParams) -> dict[str, Any]:
    """The current session's messages (oldest first), with the session's settings."""
    chat = ctx.chat
    key = chat.session_key(params.session_key, params.agent_id)
    entry = chat.sessions.entry(key)
    if entry is None:
        return {"sessionKey": key, "sessionId": None, "messages": []}
    messages = []
    prices = ctx.settings.usage.prices
    for item in chat.sessions.transcript(key)[1:]:
        if item.get("type") == "message":
            body = dict(item.get("message") or {})
            body.setdefault("timestamp", item.get("timestamp"))
            body["id"] = item.get("id")
            _price(body, prices)
            messages.append(body)
        elif item.get("type") == "compaction":
            messages.append(
                {
                    "role": "system",
                    "id": item.get("id"),
                    "timestamp": item.get("timestamp"),
                    "compaction": True,
                    "content": [{"type": "text", "text": item.get("summary", "")}],
                }
            )
    messages = messages[-params.limit :]
    result: dict[str, Any] = {
        "sessionKey": key,
        "sessionId": entry.session_id,
        "messages": messages,
    }
    for name in ("thinkingLevel", "verboseLevel", "modelOverride"):
        if entry.get(name) is not None:
            result[name] = entry.get(name)
    return result


class ChatAbortParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    session_key: NonEmpty
    agent_id: str | None = None
    run_id: str | None = None
    preserve_side_runs: bool | None = None


@TABLE.method("chat.abort", scope=Scope.WRITE, params=ChatAbortParams)
async def chat_abort(ctx: MethodContext, params: ChatAbortParams) -> dict[str, Any]:
    """Stop a session's reply (and its tools): the run ends with an `aborted` chat event."""
    chat = ctx.chat
    key = chat.session_key(params.session_key, params.agent_id)
    stopped = await chat.runs.abort(key, params.run_id)
    return {"ok": True, "aborted": bool(stopped), "runIds": stopped}


class ChatInjectParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    session_key: NonEmpty
    message: NonEmpty
    agent_id: str | None = None
    label: Annotated[str, msgspec.Meta(max_length=100)] | None = None


@TABLE.method("chat.inject", scope=Scope.ADMIN, params=ChatInjectParams)
def chat_inject(ctx: MethodContext, params: ChatInjectParams) -> dict[str, Any]:
    """Put an assistant note into the transcript without running the model."""
    from moltis_desktop.agent.transcript import assistant_text_entry

    chat = ctx.chat
    key = chat.session_key(params.session_key, params.agent_id)
    chat.sessions.get_or_create(key)
    entry = assistant_text_entry(params.message, injected=True, label=params.label or None)
    message_id = chat.sessions.append(key, entry)
    return {"ok": True, "sessionKey": key, "messageId": message_id}


class AgentParams(msgspec.Struct, rename="camel"):
    message: NonEmpty
    idempotency_key: NonEmpty
    agent_id: str | None = None
    session_key: str | None = None
    session_id: str | None = None
    thinking: str | None = None
    model: str | None = None
    provider: str | None = None
    timeout: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Seconds to wait for the reply (0 or absent: no limit)."""
    extra_system_prompt: str | None = None
    attachments: list[Any] | None = None
    channel: str | None = None
    deliver: bool | None = None


def _final(reply: Reply) -> tuple[dict[str, Any], GatewayError | None]:
    """`agent`'s final answer for a reply (or the error it raises)."""
    if reply.status == "ok":
        from moltis_desktop.agent.transcript import usage_dict

        meta: dict[str, Any] = {"durationMs": reply.duration_ms}
        if reply.stop_reason != "command":
            meta["agentMeta"] = {
                "model": reply.model,
                "usage": usage_dict(reply.usage),
                "stopReason": reply.stop_reason,
            }
        payloads = [{"text": reply.text}] if reply.text else []
        return (
            {
                "runId": reply.run_id,
                "status": "ok",
                "summary": "completed",
                "result": {"payloads": payloads, "meta": meta},
            },
            None,
        )
    summary = {"runId": reply.run_id, "status": "error", "summary": reply.error}
    return summary, GatewayError(ErrorCode.UNAVAILABLE, reply.error, payload=summary)


@TABLE.method("agent", scope=Scope.WRITE, params=AgentParams)
async def agent(ctx: MethodContext, params: AgentParams) -> dict[str, Any]:
    """Run the agent on a message: an `accepted` answer first, then (same request id) the
    final one with the reply (`result.payloads`). Streams `agent` / `chat` events too."""
    from moltis_desktop.agent.ask import submit

    chat = ctx.chat
    run_id = params.idempotency_key
    existing = chat.runs.get(run_id)
    if existing is not None:
        if existing.outcome is None:
            return {
                "runId": run_id,
                "status": "in_flight",
                "sessionKey": existing.session_key,
                "agentId": existing.agent_id,
            }
        payload, error = _final(existing.reply())
        if error is not None:
            raise error
        return payload
    model = (
        f"{params.provider}/{params.model}" if params.provider and params.model else params.model
    )
    turn = await submit(
        chat,
        params.message,
        session_key=params.session_key,
        agent_id=params.agent_id,
        run_id=run_id,
        thinking=params.thinking,
        model=model,
        extra_system_prompt=params.extra_system_prompt or "",
        attachments=_attachments(params.attachments),
        channel=params.channel or "cli",
    )
    turn.close()  # the reply streams as events; this answer waits for it whole
    if turn.run is not None:
        accepted = {
            "runId": run_id,
            "sessionKey": turn.session_key,
            "agentId": turn.agent_id,
            "status": "accepted",
            "acceptedAt": ctx.clock.now_ms(),
        }
        ctx.conn.send(encode_ok(ctx.request_id, accepted))
    timeout = params.timeout or None
    reply = await turn.reply(timeout)
    if reply.status == "timeout":
        await chat.runs.abort(turn.session_key, run_id)
        raise GatewayError(
            ErrorCode.AGENT_TIMEOUT,
            f"no reply within {timeout} s",
            payload={"runId": run_id, "status": "timeout"},
        )
    payload, error = _final(reply)
    if error is not None:
        raise error
    return payload


class AgentWaitParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    run_id: NonEmpty
    timeout_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


@TABLE.method("agent.wait", scope=Scope.WRITE, params=AgentWaitParams)
async def agent_wait(ctx: MethodContext, params: AgentWaitParams) -> dict[str, Any]:
    """Wait for a run to finish (`status` ok, error, aborted, or timeout)."""
    chat = ctx.chat
    timeout = params.timeout_ms / 1000 if params.timeout_ms is not None else None
    run = await chat.runs.wait(params.run_id, timeout)
    if run is None:
        raise GatewayError.invalid(f"unknown run {params.run_id!r}")
    result: dict[str, Any] = {
        "runId": run.run_id,
        "sessionKey": run.session_key,
        "startedAt": run.accepted_at_ms,
    }
    reply = run.reply()
    result["status"] = reply.status
    if reply.status == "timeout":
        return result
    result["endedAt"] = reply.ended_at_ms
    if reply.status == "error":
        result["error"] = reply.error
    elif reply.status == "ok":
        result["text"] = reply.text
    return result


class AgentIdentityParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    agent_id: str | None = None
    session_key: str | None = None


@TABLE.method("agent.identity.get", scope=Scope.READ, params=AgentIdentityParams)
def agent_identity(ctx: MethodContext, params: AgentIdentityParams) -> dict[str, Any]:
    """An agent's display name (from the config, else its id)."""
    chat = ctx.chat
    agent = (
        chat.agent_of(chat.session_key(params.session_key))
        if params.session_key and not params.agent_id
        else chat.agent(params.agent_id)
    )
    return {
        "agentId": agent.id,
        "name": agent.name or agent.id,
        "nameSource": "config" if agent.name else "default",
    }


class SendParams(msgspec.Struct, rename="camel"):
    to: NonEmpty
    idempotency_key: NonEmpty
    message: str | None = None
    channel: str | None = None
    session_key: str | None = None
    agent_id: str | None = None
    account_id: str | None = None


@TABLE.method("send", scope=Scope.WRITE, params=SendParams, dedupe=True)
def send(ctx: MethodContext, params: SendParams) -> dict[str, Any]:
    """Deliver a message. Today only to a session (`to` is a session key, or `channel` is
    `session`): it is added to the transcript as the assistant's and shown to clients.
    Messaging channels arrive with the channels work."""
    chat = ctx.chat
    if params.channel and params.channel not in ("session", "webchat"):
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            f"channel {params.channel!r} is not configured; only session "
            "delivery exists in this version",
        )
    if not params.message:
        raise GatewayError.invalid("message required")
    key = chat.session_key(params.session_key or params.to, params.agent_id)
    message_id = chat.deliver(key, params.message, run_id=f"send-{params.idempotency_key}")
    return {"ok": True, "channel": "session", "to": key, "messageId": message_id}
