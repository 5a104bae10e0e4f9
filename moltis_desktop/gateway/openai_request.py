"""The OpenAI-compatible endpoint's requests: the body parsed and checked (OpenAI's error
shape for whatever is wrong), and where a request goes (agent, session, model)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from aiohttp import web

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.gateway.http_security import error, error_body

if TYPE_CHECKING:
    from moltis_desktop.agent.service import ChatService

AGENT_PREFIXES = ("moltis:", "openclaw:", "agent:")
"""Model names that pick an agent (`moltis:<agentId>`; the others are OpenClaw's)."""
AGENT_HEADERS = ("x-moltis-agent-id", "x-openclaw-agent-id")
SESSION_HEADERS = ("x-moltis-session-key", "x-openclaw-session-key")
_DEFAULT_AGENT_MODELS = frozenset({"", "moltis", "openclaw"})
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
        return error_body(self.message, self.code, self.kind)

    def response(self) -> web.Response:
        return error(self.status, self.message, self.code, kind=self.kind, headers=self.headers)


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


async def read_request(request: web.Request) -> ChatRequest:
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
