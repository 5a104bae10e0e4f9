"""chat.send, chat.history, chat.abort, chat.inject, agent, agent.wait, agent.identity.get,
send: talking to the agent."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from moltis_desktop.gateway.registry import MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty, encode_ok

if TYPE_CHECKING:
    from moltis_desktop.agent.runs import Run
    from moltis_desktop.agent.service import ChatService, SendOutcome
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.gateway.server import GatewayServer

TABLE = MethodTable()


STARTING_RETRY_MS = 250


def chat_service(ctx: MethodContext) -> ChatService:
    """The chat service, or OpenClaw's retryable "starting" answer while it loads."""
    services = ctx.gateway.services
    if services is None:
        if ctx.gateway.agent_loading:
            raise GatewayError(
                ErrorCode.UNAVAILABLE,
                "the agent is starting; retry shortly",
                retryable=True,
                retry_after_ms=STARTING_RETRY_MS,
                details={"reason": "startup-sidecars"},
            )
        raise GatewayError(ErrorCode.UNAVAILABLE, "the agent is not running in this gateway")
    return services.chat


def _attachments(raw: Any) -> Any:
    from moltis_desktop.agent.service import attachments_from

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


async def send_message(
    gateway: GatewayServer,
    chat: ChatService,
    key: str,
    message: str,
    run_id: str,
    **kwargs: Any,
) -> SendOutcome:
    """What `chat.send` does with a message (voice uses it too): the chat service takes it,
    and its reply streams to every client through the chat event bridge."""
    bridge = gateway.chat_bridge
    outcome = await chat.send(key, message, run_id=run_id, sink=bridge, **kwargs)
    if outcome.run is None and outcome.reply is not None:
        bridge.command_reply(run_id, outcome.session_key, outcome.agent_id, outcome.reply)
    return outcome


@TABLE.method("chat.send", scope=Scope.WRITE, params=ChatSendParams)
async def chat_send(ctx: MethodContext, params: ChatSendParams) -> dict[str, Any]:
    """Send a message to a session; the reply streams as `chat` events. `runId` is the
    `idempotencyKey`; a repeat while it runs answers `in_flight`."""
    chat = chat_service(ctx)
    previous = _existing(chat, params.idempotency_key)
    if previous is not None:
        return previous
    key = chat.session_key(params.session_key, params.agent_id)
    outcome = await send_message(
        ctx.gateway,
        chat,
        key,
        params.message,
        params.idempotency_key,
        thinking=params.thinking,
        attachments=_attachments(params.attachments),
        channel="webchat",
        interpret_commands=not params.suppress_command_interpretation,
    )
    status = "started" if outcome.run is not None else "ok"
    return {"runId": params.idempotency_key, "status": status, "sessionKey": outcome.session_key}


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
    chat = chat_service(ctx)
    key = chat.session_key(params.session_key, params.agent_id)
    entry = chat.sessions.entry(key)
    if entry is None:
        return {"sessionKey": key, "sessionId": None, "messages": []}
    messages = []
    prices = ctx.gateway.settings.usage.prices
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
    chat = chat_service(ctx)
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

    chat = chat_service(ctx)
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


def _final(run: Run) -> tuple[dict[str, Any], GatewayError | None]:
    from moltis_desktop.agent.loop import RunFailed, RunFinished

    outcome = run.outcome
    started = run.accepted_at_ms
    meta: dict[str, Any] = {"durationMs": max(0, run.finished_at_ms - started)}
    if isinstance(outcome, RunFinished):
        from moltis_desktop.agent.transcript import usage_dict

        meta["agentMeta"] = {
            "model": outcome.model,
            "usage": usage_dict(outcome.usage),
            "stopReason": outcome.stop_reason,
        }
        payloads = [{"text": outcome.text}] if outcome.text else []
        return (
            {
                "runId": run.run_id,
                "status": "ok",
                "summary": "completed",
                "result": {"payloads": payloads, "meta": meta},
            },
            None,
        )
    message = outcome.message if isinstance(outcome, RunFailed) else "the run was aborted"
    summary = {"runId": run.run_id, "status": "error", "summary": message}
    return summary, GatewayError(ErrorCode.UNAVAILABLE, message, payload=summary)


@TABLE.method("agent", scope=Scope.WRITE, params=AgentParams)
async def agent(ctx: MethodContext, params: AgentParams) -> dict[str, Any]:
    """Run the agent on a message: an `accepted` answer first, then (same request id) the
    final one with the reply (`result.payloads`). Streams `agent` / `chat` events too."""
    chat = chat_service(ctx)
    run_id = params.idempotency_key
    existing = chat.runs.get(run_id)
    if existing is not None:
        if existing.outcome is None:
            return {
                "runId": run_id,
                "status": "in_flight",
                "sessionKey": existing.session_key,
                "agentId": existing.spec.agent_id,
            }
        payload, error = _final(existing)
        if error is not None:
            raise error
        return payload
    key = chat.session_key(params.session_key, params.agent_id)
    model = (
        f"{params.provider}/{params.model}" if params.provider and params.model else params.model
    )
    outcome = await send_message(
        ctx.gateway,
        chat,
        key,
        params.message,
        run_id,
        thinking=params.thinking,
        model=model,
        extra_system_prompt=params.extra_system_prompt or "",
        attachments=_attachments(params.attachments),
        channel=params.channel or "cli",
    )
    accepted = {
        "runId": run_id,
        "sessionKey": outcome.session_key,
        "agentId": outcome.agent_id,
        "status": "accepted",
        "acceptedAt": ctx.gateway.clock.now_ms(),
    }
    run = outcome.run
    if run is None:
        payloads = [{"text": outcome.reply}] if outcome.reply else []
        return {
            "runId": run_id,
            "status": "ok",
            "summary": "completed",
            "result": {"payloads": payloads, "meta": {"durationMs": 0}},
        }
    ctx.conn.send(encode_ok(ctx.request_id, accepted))
    timeout = params.timeout or None
    try:
        await asyncio.wait_for(asyncio.shield(run.done.wait()), timeout)
    except TimeoutError:
        await chat.runs.abort(run.session_key, run.run_id)
        raise GatewayError(
            ErrorCode.AGENT_TIMEOUT,
            f"no reply within {timeout} s",
            payload={"runId": run_id, "status": "timeout"},
        ) from None
    payload, error = _final(run)
    if error is not None:
        raise error
    return payload


class AgentWaitParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    run_id: NonEmpty
    timeout_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


@TABLE.method("agent.wait", scope=Scope.WRITE, params=AgentWaitParams)
async def agent_wait(ctx: MethodContext, params: AgentWaitParams) -> dict[str, Any]:
    """Wait for a run to finish (`status` ok, error, aborted, or timeout)."""
    chat = chat_service(ctx)
    timeout = params.timeout_ms / 1000 if params.timeout_ms is not None else None
    run = await chat.runs.wait(params.run_id, timeout)
    if run is None:
        raise GatewayError.invalid(f"unknown run {params.run_id!r}")
    result: dict[str, Any] = {
        "runId": run.run_id,
        "sessionKey": run.session_key,
        "startedAt": run.accepted_at_ms,
    }
    if run.outcome is None:
        result["status"] = "timeout"
        return result
    from moltis_desktop.agent.loop import RunFailed, RunFinished

    result["status"] = run.status
    result["endedAt"] = run.finished_at_ms
    if isinstance(run.outcome, RunFailed):
        result["error"] = run.outcome.message
    elif isinstance(run.outcome, RunFinished):
        result["text"] = run.outcome.text
    return result


class AgentIdentityParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    agent_id: str | None = None
    session_key: str | None = None


@TABLE.method("agent.identity.get", scope=Scope.READ, params=AgentIdentityParams)
def agent_identity(ctx: MethodContext, params: AgentIdentityParams) -> dict[str, Any]:
    """An agent's display name (from the config, else its id)."""
    chat = chat_service(ctx)
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
    from moltis_desktop.agent.transcript import assistant_text_entry

    chat = chat_service(ctx)
    if params.channel and params.channel not in ("session", "webchat"):
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            f"channel {params.channel!r} is not configured; only session "
            "delivery exists in this version",
        )
    if not params.message:
        raise GatewayError.invalid("message required")
    key = chat.session_key(params.session_key or params.to, params.agent_id)
    chat.sessions.get_or_create(key)
    message_id = chat.sessions.append(key, assistant_text_entry(params.message, delivered=True))
    ctx.gateway.chat_bridge.command_reply(
        f"send-{params.idempotency_key}", key, chat.agent_of(key).id, params.message
    )
    return {"ok": True, "channel": "session", "to": key, "messageId": message_id}
