"""The OpenAI-compatible HTTP endpoint: `POST /v1/chat/completions` and `GET /v1/models`
(the request's parsing and routing are in `openai_request.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.gateway.http_security import ERROR_HEADERS, json_answer
from moltis_desktop.gateway.openai_request import (
    OpenAIError,
    Prompt,
    Route,
    parse_prompt,
    read_request,
    route,
)
from moltis_desktop.gateway.policy import Access, add_route
from moltis_desktop.gateway.state import STATE_KEY, GatewayState
from moltis_desktop.protocol.frames import encode_json

if TYPE_CHECKING:
    from moltis_desktop.agent.ask import Turn
    from moltis_desktop.agent.runs import Reply, RunEvent
    from moltis_desktop.agent.service import ChatService
    from moltis_desktop.gateway.services import AgentServices
    from moltis_desktop.providers.base import Usage

_LOGGER = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
CHANNEL = "the OpenAI-compatible API"
"""What the system prompt says the conversation happens over."""
_POLL_S = 0.1
"""How often a waiting request checks that its client is still there: aiohttp does not
cancel handlers when the client leaves, and a silent agent (a tool, a stalled model) gives
no write that could fail."""
_DISCOVERY_WAIT_S = 3.0
_LISTED_PREFIXES = ("moltis:", "agent:")


# ---------------------------------------------------------------------------- guards


def _chat_service(gateway: GatewayState) -> ChatService:
    return _services(gateway).chat


def _services(gateway: GatewayState) -> AgentServices:
    """The agent side, or the 503 that says why it is not there (yet)."""
    services = gateway.agent
    if services is not None:
        return services
    if gateway.agent_loading:
        raise OpenAIError(
            503,
            "the agent is starting; retry shortly",
            "server_error",
            "agent_starting",
            {"Retry-After": "1"},
        )
    raise OpenAIError(503, "the agent is not running in this gateway", "server_error")


Endpoint = Callable[[GatewayState, web.Request], Awaitable[web.StreamResponse]]


def _endpoint(handler: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Enablement first (the security middleware has checked the Bearer token);
    `OpenAIError`s become OpenAI-shaped answers."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        gateway = request.app[STATE_KEY]
        try:
            if not gateway.settings.gateway.chat_completions:
                raise OpenAIError(
                    404,
                    "the OpenAI-compatible endpoint is disabled: enable gateway.chat_completions "
                    "in the config (`moltis config set gateway.chat_completions true`)",
                    code="endpoint_disabled",
                )
            return await handler(gateway, request)
        except OpenAIError as exc:
            return exc.response()

    return wrapped


# ---------------------------------------------------------------------------- a run


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _next_event(turn: Turn, request: web.Request) -> RunEvent | None:
    """The run's next event; None once the client has gone away (or the run has ended)."""
    events = turn.events
    assert events is not None
    while True:
        if _gone(request):
            return None
        with contextlib.suppress(TimeoutError):
            # Not asyncio.wait_for, which on Python 3.11 can lose a cancellation.
            async with asyncio.timeout(_POLL_S):
                return await events.next()


def _usage(usage: Usage) -> dict[str, Any]:
    # OpenAI counts cached prompt tokens inside prompt_tokens.
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def _finish_reason(stop_reason: str) -> str:
    return "length" if stop_reason == "max_tokens" else "stop"


def _failure(reply: Reply) -> OpenAIError:
    if reply.status == "aborted":
        return OpenAIError(502, reply.error, "server_error", "aborted")
    if reply.error_kind == "rate_limit":
        return OpenAIError(429, reply.error, "rate_limit_error", "rate_limit_exceeded")
    return OpenAIError(502, reply.error, "server_error", reply.error_kind)


@dataclass
class Completion:
    """One request's answer being made."""

    id: str
    created: int
    model: str
    include_usage: bool

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body = self._head("chat.completion.chunk")
        body["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self.include_usage:
            body["usage"] = None  # as OpenAI: every chunk but the last carries a null usage
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": _usage(usage)}

    def whole(self, text: str, stop_reason: str, usage: Usage) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None}
        choice["finish_reason"] = _finish_reason(stop_reason)
        return {**self._head("chat.completion"), "choices": [choice], "usage": _usage(usage)}


def _history_entries(prompt: Prompt) -> list[dict[str, Any]]:
    from moltis_desktop.agent.transcript import to_entries
    from moltis_desktop.providers.base import ImagePart, Message, Part, TextPart

    entries: list[dict[str, Any]] = []
    for role, text, images in prompt.history:
        parts: list[Part] = [TextPart(text)] if text else []
        parts += [ImagePart(mime, data) for mime, data in images]
        if parts:
            entries += to_entries(Message(role, tuple(parts)))
    return entries


async def chat_completions(gateway: GatewayState, request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions`: one agent turn, answered whole or streamed (SSE)."""
    from moltis_desktop.agent.ask import submit
    from moltis_desktop.media.attachments import Attachment

    chat = _chat_service(gateway)
    body = await read_request(request)
    prompt = parse_prompt(body.messages)
    where = route(chat, request, body)
    run_id = uuid.uuid4().hex
    answer = Completion(
        id=f"chatcmpl-{run_id}",
        created=gateway.clock.now_ms() // 1000,
        model=body.model or f"moltis:{where.agent_id}",
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    turn: Turn | None = None
    try:
        if where.one_off and prompt.history:
            # Stateless, as OpenAI's API: the request carries the conversation, so the
            # one-off session starts with it.
            await asyncio.to_thread(
                chat.sessions.append_many, where.session_key, _history_entries(prompt)
            )
        try:
            turn = await submit(
                chat,
                prompt.text,
                session_key=where.session_key,
                agent_id=where.agent_id,
                run_id=run_id,
                model=where.model,
                attachments=[Attachment(mime, data) for mime, data in prompt.images],
                channel=CHANNEL,
                extra_system_prompt=prompt.system,
                interpret_commands=False,
            )
        except MoltisError as exc:
            raise OpenAIError(400, exc.message) from None
        if turn.run is None:
            raise OpenAIError(400, "the last user message is empty")
        if body.stream:
            return await _stream(request, chat, turn, answer)
        return await _whole(request, chat, turn, answer)
    finally:
        await _finish(chat, where, turn)


async def _whole(
    request: web.Request, chat: ChatService, turn: Turn, answer: Completion
) -> web.StreamResponse:
    turn.close()  # only the outcome is wanted
    while (reply := await turn.reply(_POLL_S)).status == "timeout":
        if _gone(request):
            # Nobody will read the answer: stop paying for it.
            await chat.runs.abort(turn.session_key, turn.run_id)
            return web.Response(status=499, reason="Client Closed Request")
    if reply.status == "ok":
        return json_answer(200, answer.whole(reply.text, reply.stop_reason, reply.usage))
    raise _failure(reply)


async def _stream(
    request: web.Request, chat: ChatService, turn: Turn, answer: Completion
) -> web.StreamResponse:
    from moltis_desktop.agent import loop

    assert turn.run is not None
    response = web.StreamResponse(
        headers={**ERROR_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
    )

    async def send(*payloads: object) -> None:
        # The headers wait for the model's first sign of life, so that a failure before it
        # (bad key, rate limit, provider down) still gets a proper HTTP status.
        if not response.prepared:
            await response.prepare(request)
            await response.write(_sse(answer.chunk({"role": "assistant", "content": ""})))
        for payload in payloads:
            await response.write(b"data: [DONE]\n\n" if payload is _DONE else _sse(payload))

    sent = 0
    try:
        while (event := await _next_event(turn, request)) is not None:
            if isinstance(event, loop.AssistantDelta):
                # The increment is cut from the accumulated text, which also holds the
                # paragraph break the loop puts between tool rounds.
                piece, sent = event.accumulated[sent:], len(event.accumulated)
                if piece:
                    await send(answer.chunk({"content": piece}))
            elif isinstance(event, loop.RunFinished):
                tail = [answer.chunk({"content": event.text[sent:]})] if event.text[sent:] else []
                usage = [answer.usage_chunk(event.usage)] if answer.include_usage else []
                finish = answer.chunk({}, _finish_reason(event.stop_reason))
                await send(*tail, finish, *usage, _DONE)
                await response.write_eof()
                return response
            elif isinstance(event, loop.RunFailed | loop.RunAborted):
                error = _failure(turn.run.reply())
                if not response.prepared:
                    raise error
                await send(error.body(), _DONE)
                await response.write_eof()
                return response
            elif isinstance(event, loop.ReasoningDelta | loop.ToolStarted | loop.ModelCallFinished):
                await send()
    except ConnectionError:
        pass  # the client went away mid-write
    _LOGGER.info("the client left the stream of run %s; stopping the run", turn.run_id)
    await chat.runs.abort(turn.session_key, turn.run_id)
    return response


_DONE = object()
"""The stream's last message, `data: [DONE]`."""


def _sse(payload: object) -> bytes:
    return b"data: " + encode_json(payload) + b"\n\n"


async def _finish(chat: ChatService, where: Route, turn: Turn | None) -> None:
    """Stop the run if the request ended before it (errors, shutdown); forget a one-off
    session (its transcript is archived, its usage stays counted)."""
    if turn is not None:
        turn.close()
        if turn.run is not None and not turn.run.done.is_set():
            await chat.runs.abort(turn.session_key, turn.run_id)
    if where.one_off:
        await asyncio.to_thread(chat.sessions.delete, where.session_key)


# ---------------------------------------------------------------------------- models


async def _models(gateway: GatewayState) -> list[dict[str, Any]]:
    services = _services(gateway)
    # Stale provider lists are asked for, briefly: a picker wants the models, but an
    # unreachable provider must not hold the answer up (the refresh goes on regardless).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(services.models.catalog.refresh(), _DISCOVERY_WAIT_S)
    ids = [(p + a.id, "moltis") for a in gateway.settings.agents.list for p in _LISTED_PREFIXES]
    ids += [(info.ref, info.provider) for info in services.models.catalog.models()]
    created = gateway.clock.now_ms() // 1000
    return [{"id": i, "object": "model", "created": created, "owned_by": o} for i, o in ids]


async def list_models(gateway: GatewayState, request: web.Request) -> web.StreamResponse:
    """`GET /v1/models`: the agents (`moltis:<id>`, `agent:<id>`) and the catalogue's
    `provider/model` refs."""
    return json_answer(200, {"object": "list", "data": await _models(gateway)})


async def get_model(gateway: GatewayState, request: web.Request) -> web.StreamResponse:
    """`GET /v1/models/{id}`."""
    wanted = request.match_info["model"]
    for model in await _models(gateway):
        if model["id"] == wanted:
            return json_answer(200, model)
    raise OpenAIError(404, f"the model {wanted!r} does not exist", code="model_not_found")


def add_openai_routes(app: web.Application) -> None:
    """Register the endpoint's routes (they answer 404 while it is disabled)."""
    add_route(app, "POST", CHAT_PATH, _endpoint(chat_completions), Access.TOKEN, json_body=True)
    add_route(app, "GET", MODELS_PATH, _endpoint(list_models), Access.TOKEN)
    add_route(app, "GET", MODELS_PATH + "/{model:.+}", _endpoint(get_model), Access.TOKEN)
