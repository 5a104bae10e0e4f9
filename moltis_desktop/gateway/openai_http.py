"""The OpenAI-compatible HTTP endpoint: `POST /v1/chat/completions` and `GET /v1/models`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from aiohttp import web

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.gateway.http import SECURITY_HEADERS, bearer_matches, is_direct_loopback
from moltis_desktop.gateway.server import GATEWAY_KEY, GatewayServer
from moltis_desktop.protocol.frames import encode_json

if TYPE_CHECKING:
    from moltis_desktop.agent.loop import AgentEvent, RunAborted, RunFailed
    from moltis_desktop.agent.runs import Run
    from moltis_desktop.agent.service import ChatService
    from moltis_desktop.gateway.services import AgentServices
    from moltis_desktop.providers.base import Usage

_LOGGER = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
AGENT_PREFIXES = ("moltis:", "openclaw:", "agent:")
"""Model names that pick an agent (`moltis:<agentId>`; the others are OpenClaw's)."""
AGENT_HEADERS = ("x-moltis-agent-id", "x-openclaw-agent-id")
SESSION_HEADERS = ("x-moltis-session-key", "x-openclaw-session-key")
CHANNEL = "the OpenAI-compatible API"
"""What the system prompt says the conversation happens over."""
_DEFAULT_AGENT_MODELS = frozenset({"", "moltis", "openclaw"})
_POLL_S = 0.1
"""How often a waiting request checks that its client is still there: aiohttp does not
cancel handlers when the client leaves, and a silent agent (a tool, a stalled model) gives
no write that could fail."""
_DISCOVERY_WAIT_S = 3.0
_LISTED_PREFIXES = ("moltis:", "agent:")
_SAFE_USER = re.compile(r"[A-Za-z0-9_.@+-]{1,96}")
# Segments that mean something in a session key (`…:dm:<peer>`); a `user` spelled like one
# is hashed so that it cannot change what the key names.
_KEY_MARKERS = frozenset({"dm", "group", "channel", "room", "cron", "hook", "topic"})
Role = Literal["user", "assistant"]
Image = tuple[str, str]
"""(media type, base64 data)."""


class OpenAIError(Exception):
    """An answer in OpenAI's error shape (`{"error": {message, type, param, code}}`)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}
        }

    def response(self) -> web.Response:
        return _json(self.status, self.body(), self.headers)


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=encode_json(body),
        content_type="application/json",
        charset="utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


# ---------------------------------------------------------------------------- the request


class _ChatMessage(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct):
    """The fields of an OpenAI Chat Completions request the gateway uses (others are
    accepted and ignored: the agent's settings decide temperature, tools and so on)."""

    messages: list[_ChatMessage]
    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    user: str | None = None


@dataclass(frozen=True)
class Prompt:
    """A request's messages, sorted out: what the agent is asked, and the context."""

    system: str
    """The system/developer messages, joined (this turn's extra system prompt)."""
    history: tuple[tuple[Role, str, tuple[Image, ...]], ...]
    """The earlier user and assistant messages (replayed only in one-off sessions)."""
    text: str
    """The last user message's text."""
    images: tuple[Image, ...]


def _content(content: str | list[dict[str, Any]] | None, where: str) -> tuple[str, list[Image]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[Image] = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "input_text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url":
            ref = part.get("image_url")
            url = str(ref.get("url") if isinstance(ref, dict) else ref or "")
            if not url.startswith("data:") or "," not in url:
                raise OpenAIError(
                    400,
                    f"{where}: images must be `data:` URLs (the gateway does not fetch "
                    "remote images)",
                )
            header, _, data = url.partition(",")
            images.append((header[5:].split(";", 1)[0] or "image/png", data))
        else:
            raise OpenAIError(
                400, f"{where}: content part type {kind!r} is not supported (text, image_url)"
            )
    return "\n".join(texts), images


def parse_prompt(messages: Sequence[_ChatMessage]) -> Prompt:
    """Validate the messages (raises `OpenAIError` 400 saying what is wrong)."""
    if not messages:
        raise OpenAIError(400, "`messages` must be a non-empty list ending with a `user` message")
    last = messages[-1]
    if last.role != "user":
        raise OpenAIError(
            400,
            f"the last message must have role `user` (it has {last.role!r}): the agent "
            "answers the last user message",
        )
    system: list[str] = []
    history: list[tuple[Role, str, tuple[Image, ...]]] = []
    for index, message in enumerate(messages[:-1]):
        where = f"messages[{index}]"
        text, images = _content(message.content, where)
        if message.role in ("system", "developer"):
            if text.strip():
                system.append(text.strip())
        elif message.role == "user":
            history.append(("user", text, tuple(images)))
        elif message.role == "assistant":
            history.append(("assistant", text, tuple(images)))
        elif message.role in ("tool", "function"):
            raise OpenAIError(
                400,
                f"{where}: `{message.role}` messages are not supported: the agent runs its "
                "own tools, so client-side tool results cannot be replayed",
            )
        else:
            raise OpenAIError(
                400, f"{where}: unknown role {message.role!r} (system, user, assistant)"
            )
    text, images = _content(last.content, f"messages[{len(messages) - 1}]")
    if not text.strip() and not images:
        raise OpenAIError(400, "the last user message is empty")
    return Prompt("\n\n".join(system), tuple(history), text, tuple(images))


async def _read_request(request: web.Request) -> ChatRequest:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise OpenAIError(
            413, f"the request body is larger than the gateway's {request.client_max_size} bytes"
        ) from None
    try:
        return msgspec.json.decode(raw, type=ChatRequest)
    except msgspec.ValidationError as exc:
        raise OpenAIError(400, f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise OpenAIError(400, "the request body is not valid JSON") from None


# ---------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """Where a request goes: the agent, the session, and a model override."""

    agent_id: str
    session_key: str
    model: str | None
    """`provider/model` asked for by the request; None for the agent's own."""
    one_off: bool
    """A session made for this request only (deleted afterwards)."""


def _header(request: web.Request, names: Sequence[str]) -> str:
    for name in names:
        value = request.headers.get(name, "").strip()
        if value:
            return value
    return ""


def user_segment(user: str) -> str:
    """The `user` field as one safe session-key segment (hashed unless plainly safe)."""
    if _SAFE_USER.fullmatch(user) and user.lower() not in _KEY_MARKERS:
        return user
    return "u-" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:32]


def route(chat: ChatService, request: web.Request, body: ChatRequest) -> Route:
    """The agent (model `moltis:<id>`/`openclaw:<id>`/`agent:<id>`, else the agent header,
    else the default), the model (a `provider/model` model name), and the session (the
    session header, else one per `user`, else a one-off)."""
    requested = (body.model or "").strip()
    agent_id: str | None = None
    model: str | None = None
    for prefix in AGENT_PREFIXES:
        if requested.lower().startswith(prefix):
            agent_id = requested[len(prefix) :]
            break
    else:
        if requested.lower() not in _DEFAULT_AGENT_MODELS:
            model = requested
    try:
        agent = chat.agent(agent_id or _header(request, AGENT_HEADERS) or None)
    except MoltisError as exc:
        raise OpenAIError(404, exc.message, code="model_not_found") from None
    if model is not None:
        try:
            model = chat.check_model(model, agent)
        except MoltisError as exc:
            raise OpenAIError(404, exc.message, code="model_not_found") from None
    agent_key = agent.id.lower()
    session = _header(request, SESSION_HEADERS)
    one_off = False
    if session.lower() == "main":
        key = ""  # the agent's main session
    elif session:
        scoped = session.lower().startswith(("agent:", "cron:", "hook:"))
        key = session if scoped else f"agent:{agent_key}:{session}"
    elif body.user:
        key = f"agent:{agent_key}:openai:{user_segment(body.user)}"
    else:
        key, one_off = f"agent:{agent_key}:openai:{uuid.uuid4().hex}", True
    try:
        canonical = chat.session_key(key, agent.id)
    except MoltisError as exc:
        raise OpenAIError(400, exc.message, code="invalid_session_key") from None
    return Route(agent.id, canonical, model, one_off)


# ---------------------------------------------------------------------------- guards


def _chat_service(gateway: GatewayServer) -> ChatService:
    return _services(gateway).chat


def _services(gateway: GatewayServer) -> AgentServices:
    """The agent side, or the 503 that says why it is not there (yet)."""
    services = gateway.services
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


async def _authorize(gateway: GatewayServer, request: web.Request) -> None:
    """The gateway's token (or password) as a Bearer token; failures count towards the
    same lockout as failed WebSocket connects."""
    if gateway.shared_secret.mode == "none":
        if is_direct_loopback(request):
            return
        raise OpenAIError(
            401,
            "this gateway has auth mode `none` and accepts only loopback clients "
            "(set gateway.auth.mode to `token`)",
            code="invalid_api_key",
        )
    throttle = gateway.auth_throttle
    client = request.remote or ""
    retry_ms = throttle.retry_after_ms(client)
    if retry_ms is not None:
        raise OpenAIError(
            429,
            "too many failed authentication attempts; retry later",
            "rate_limit_error",
            "auth_rate_limited",
            {"Retry-After": str(math.ceil(retry_ms / 1000))},
        )
    if bearer_matches(gateway, request):
        throttle.record_success(client)
        return
    delay = throttle.record_failure(client)
    if delay:
        await asyncio.sleep(delay)
    secret = "password" if gateway.shared_secret.mode == "password" else "token"
    raise OpenAIError(
        401,
        f"missing or wrong gateway {secret}: send `Authorization: Bearer <gateway {secret}>` "
        "(the OpenAI SDKs send their api_key this way)",
        code="invalid_api_key",
    )


Endpoint = Callable[[GatewayServer, web.Request], Awaitable[web.StreamResponse]]


def _endpoint(handler: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Enablement and auth first; `OpenAIError`s become OpenAI-shaped answers."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY_KEY]
        try:
            if not gateway.settings.gateway.chat_completions:
                raise OpenAIError(
                    404,
                    "the OpenAI-compatible endpoint is disabled: enable gateway.chat_completions "
                    "in the config (`moltis config set gateway.chat_completions true`)",
                    code="endpoint_disabled",
                )
            await _authorize(gateway, request)
            return await handler(gateway, request)
        except OpenAIError as exc:
            return exc.response()

    return wrapped


# ---------------------------------------------------------------------------- a run


class _Feed:
    """The run's sink: events queue up for the request, and go on to the `chat`/`agent`
    event bridge so that operators watching the session see the turn too."""

    def __init__(self, bridge: Callable[[Run, AgentEvent], None]) -> None:
        self.queue: asyncio.Queue[AgentEvent] = asyncio.Queue()
        self._bridge = bridge

    def __call__(self, run: Run, event: AgentEvent) -> None:
        self.queue.put_nowait(event)
        self._bridge(run, event)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _next_event(feed: _Feed, request: web.Request) -> AgentEvent | None:
    """The run's next event; None once the client has gone away."""
    while feed.queue.empty():
        if _gone(request):
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(feed.queue.get(), _POLL_S)
    return feed.queue.get_nowait()


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


def _failure(outcome: RunFailed | RunAborted) -> OpenAIError:
    from moltis_desktop.agent.loop import RunFailed

    if not isinstance(outcome, RunFailed):
        return OpenAIError(502, "the run was aborted", "server_error", "aborted")
    if outcome.kind == "rate_limit":
        return OpenAIError(429, outcome.message, "rate_limit_error", "rate_limit_exceeded")
    return OpenAIError(502, outcome.message, "server_error", outcome.kind)


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


async def chat_completions(gateway: GatewayServer, request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions`: one agent turn, answered whole or streamed (SSE)."""
    from moltis_desktop.agent.service import Attachment

    chat = _chat_service(gateway)
    body = await _read_request(request)
    prompt = parse_prompt(body.messages)
    where = route(chat, request, body)
    run_id = uuid.uuid4().hex
    answer = Completion(
        id=f"chatcmpl-{run_id}",
        created=gateway.clock.now_ms() // 1000,
        model=body.model or f"moltis:{where.agent_id}",
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    feed = _Feed(gateway.chat_bridge)
    run: Run | None = None
    try:
        if where.one_off and prompt.history:
            # Stateless, as OpenAI's API: the request carries the conversation, so the
            # one-off session starts with it.
            await asyncio.to_thread(
                chat.sessions.append_many, where.session_key, _history_entries(prompt)
            )
        try:
            outcome = await chat.send(
                where.session_key,
                prompt.text,
                run_id=run_id,
                sink=feed,
                model=where.model,
                attachments=[Attachment(mime, data) for mime, data in prompt.images],
                channel=CHANNEL,
                extra_system_prompt=prompt.system,
                interpret_commands=False,
            )
        except MoltisError as exc:
            raise OpenAIError(400, exc.message) from None
        run = outcome.run
        if run is None:
            raise OpenAIError(400, "the last user message is empty")
        if body.stream:
            return await _stream(request, chat, run, feed, answer)
        return await _whole(request, chat, run, answer)
    finally:
        await _finish(chat, where, run)


async def _whole(
    request: web.Request, chat: ChatService, run: Run, answer: Completion
) -> web.StreamResponse:
    from moltis_desktop.agent.loop import RunFinished

    while not run.done.is_set():
        if _gone(request):
            # Nobody will read the answer: stop paying for it.
            await chat.runs.abort(run.session_key, run.run_id)
            return web.Response(status=499, reason="Client Closed Request")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), _POLL_S)
    outcome = run.outcome
    if isinstance(outcome, RunFinished):
        return _json(200, answer.whole(outcome.text, outcome.stop_reason, outcome.usage))
    assert outcome is not None
    raise _failure(outcome)


async def _stream(
    request: web.Request, chat: ChatService, run: Run, feed: _Feed, answer: Completion
) -> web.StreamResponse:
    from moltis_desktop.agent import loop

    response = web.StreamResponse(
        headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
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
        while (event := await _next_event(feed, request)) is not None:
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
                error = _failure(event)
                if not response.prepared:
                    raise error
                await send(error.body(), _DONE)
                await response.write_eof()
                return response
            elif isinstance(event, loop.ReasoningDelta | loop.ToolStarted | loop.ModelCallFinished):
                await send()
    except ConnectionError:
        pass  # the client went away mid-write
    _LOGGER.info("the client left the stream of run %s; stopping the run", run.run_id)
    await chat.runs.abort(run.session_key, run.run_id)
    return response


_DONE = object()
"""The stream's last message, `data: [DONE]`."""


def _sse(payload: object) -> bytes:
    return b"data: " + encode_json(payload) + b"\n\n"


async def _finish(chat: ChatService, where: Route, run: Run | None) -> None:
    """Stop the run if the request ended before it (errors, shutdown); forget a one-off
    session (its transcript is archived, its usage stays counted)."""
    if run is not None and not run.done.is_set():
        await chat.runs.abort(run.session_key, run.run_id)
    if where.one_off:
        await asyncio.to_thread(chat.sessions.delete, where.session_key)


# ---------------------------------------------------------------------------- models


async def _models(gateway: GatewayServer) -> list[dict[str, Any]]:
    services = _services(gateway)
    # Stale provider lists are asked for, briefly: a picker wants the models, but an
    # unreachable provider must not hold the answer up (the refresh goes on regardless).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(services.catalog.refresh(), _DISCOVERY_WAIT_S)
    ids = [(p + a.id, "moltis") for a in gateway.settings.agents.list for p in _LISTED_PREFIXES]
    ids += [(info.ref, info.provider) for info in services.catalog.models()]
    created = gateway.clock.now_ms() // 1000
    return [{"id": i, "object": "model", "created": created, "owned_by": o} for i, o in ids]


async def list_models(gateway: GatewayServer, request: web.Request) -> web.StreamResponse:
    """`GET /v1/models`: the agents (`moltis:<id>`, `agent:<id>`) and the catalogue's
    `provider/model` refs."""
    return _json(200, {"object": "list", "data": await _models(gateway)})


async def get_model(gateway: GatewayServer, request: web.Request) -> web.StreamResponse:
    """`GET /v1/models/{id}`."""
    wanted = request.match_info["model"]
    for model in await _models(gateway):
        if model["id"] == wanted:
            return _json(200, model)
    raise OpenAIError(404, f"the model {wanted!r} does not exist", code="model_not_found")


def add_openai_routes(app: web.Application) -> None:
    """Register the endpoint's routes (they answer 404 while it is disabled)."""
    app.router.add_route("POST", CHAT_PATH, _endpoint(chat_completions))
    app.router.add_route("GET", MODELS_PATH, _endpoint(list_models))
    app.router.add_route("GET", MODELS_PATH + "/{model:.+}", _endpoint(get_model))
