"""The provider-neutral vocabulary: messages, tools, requests, streamed events, errors.

Every provider translates these to and from its own wire API and nothing else: the tool
loop, limits, retries across models and approvals live above (`agent/`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from moltis_desktop.core.errors import MoltisError

Role = Literal["user", "assistant"]
ThinkingLevel = Literal["off", "minimal", "low", "medium", "high", "xhigh"]
THINKING_LEVELS: tuple[ThinkingLevel, ...] = ("off", "minimal", "low", "medium", "high", "xhigh")


# ---------------------------------------------------------------------------- content


@dataclass(frozen=True)
class TextPart:
    """Plain text."""

    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class ImagePart:
    """An image, base64-encoded."""

    media_type: str
    """e.g. `image/png`."""
    data: str
    """Base64 of the image bytes."""
    type: Literal["image"] = "image"


@dataclass(frozen=True)
class ThinkingPart:
    """Reasoning the model showed (Anthropic extended thinking); replayed as it came."""

    text: str
    signature: str = ""
    """Anthropic's signature over the thinking block (required when replaying it)."""
    type: Literal["thinking"] = "thinking"


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool to run."""

    id: str
    name: str
    arguments: Mapping[str, Any]
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True)
class ToolResult:
    """What a tool returned, sent back to the model."""

    call_id: str
    name: str
    content: str
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"


Part = TextPart | ImagePart | ThinkingPart | ToolCall | ToolResult


@dataclass(frozen=True)
class Message:
    """One turn of the conversation. Tool results travel in a `user` message (Anthropic's
    convention); OpenAI-style providers turn them into `tool` messages."""

    role: Role
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The message's text parts joined."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(p for p in self.parts if isinstance(p, ToolCall))


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    """JSON Schema of the arguments (an object schema)."""


@dataclass(frozen=True)
class CompletionRequest:
    """One model call."""

    model: str
    """The provider's own model id (no `provider/` prefix)."""
    messages: tuple[Message, ...]
    system: str = ""
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 4096
    thinking: ThinkingLevel = "off"
    temperature: float | None = None
    cache: bool = True
    """Ask for prompt caching where the provider supports it (system prompt and history)."""


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class TextDelta:
    """More reply text (an increment, not the whole text)."""

    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """More reasoning text."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    """The model began a tool call (its arguments stream next)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallReady:
    """A tool call with its complete arguments."""

    index: int
    call: ToolCall


@dataclass(frozen=True)
class Usage:
    """Tokens of one model call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "other"]


@dataclass(frozen=True)
class Completed:
    """The call finished: the whole assistant message, why it stopped, and its usage."""

    message: Message
    stop_reason: StopReason
    usage: Usage


ProviderEvent = TextDelta | ThinkingDelta | ToolCallStarted | ToolCallReady | Completed


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelInfo:
    """A model a provider offers."""

    id: str
    """The provider's own id."""
    provider: str
    """Our provider id (`anthropic`, `openai`, `ollama`, …)."""
    name: str = ""
    context_window: int | None = None
    max_output_tokens: int | None = None
    reasoning: bool = False
    vision: bool = False
    tools: bool = True
    source: Literal["config", "discovered", "builtin"] = "discovered"

    @property
    def ref(self) -> str:
        """`provider/model`, as config and clients name it."""
        return f"{self.provider}/{self.id}"


@dataclass(frozen=True)
class ProviderCapabilities:
    """What a provider can do (per provider; models may narrow it)."""

    tools: bool = True
    streaming: bool = True
    vision: bool = False
    thinking: bool = False
    prompt_caching: bool = False
    default_context_window: int = 128_000
    tool_allowlist: tuple[str, ...] | None = None
    """Lean mode (the embedded local model): only these tools are offered on every turn,
    others only when the message names them as a `/command`. None: every tool."""


# ---------------------------------------------------------------------------- errors

ErrorKind = Literal[
    "auth",
    "rate_limit",
    "server",
    "bad_request",
    "not_found",
    "unreachable",
    "timeout",
    "context_overflow",
    "cancelled",
    "setup",
]
"""`setup`: nothing is set up to answer (no key, no local server, no local model); the
message says what to do, and clients offer the buttons to do it."""


SetupActionKind = Literal["download_model", "add_key", "start_server"]


@dataclass(frozen=True)
class SetupAction:
    """One way out of a `setup` error, which clients offer as a button: download a local
    model, add an API key, or start a local server (Ollama, LM Studio) and try again."""

    kind: SetupActionKind
    label: str
    """The button's text: "Download Qwen2.5 1.5B (1.1 GB)", "Add an API key", …"""
    model_id: str = ""
    """`download_model`: the local catalog id (`moltis.models.local.download {id}`)."""
    title: str = ""
    """`download_model`: the model's name as people read it."""
    size_bytes: int = 0
    """`download_model`: the download's size."""
    provider: str = ""
    """`add_key`: the provider whose key is wanted (`anthropic`); `start_server`: the server
    (`ollama`, `lmstudio`)."""
    secret: str = ""
    """`add_key`: the secret-store name the key goes under (`anthropic-api-key`)."""
    url: str = ""
    """`start_server`: where the server is looked for (`http://127.0.0.1:11434`)."""
    command: str = ""
    """What does the same in a terminal (`moltis models local download qwen2.5-1.5b`,
    `moltis secrets set anthropic-api-key`, `ollama serve`)."""

    def to_dict(self) -> dict[str, Any]:
        """The wire form (camelCase; empty fields left out)."""
        fields = {
            "kind": self.kind,
            "label": self.label,
            "modelId": self.model_id,
            "title": self.title,
            "bytes": self.size_bytes,
            "provider": self.provider,
            "secret": self.secret,
            "url": self.url,
            "command": self.command,
        }
        return {k: v for k, v in fields.items() if v}


class ProviderError(MoltisError):
    """A provider call failed; `message` says what to do. `retryable` errors may be retried
    or failed over to a fallback model. A `setup` error carries the `actions` that would
    fix it (clients show them as buttons)."""

    def __init__(
        self,
        provider: str,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        actions: tuple[SetupAction, ...] = (),
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s
        self.actions = actions

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limit", "server", "unreachable", "timeout")


def human_size(size_bytes: int) -> str:
    """`491 MB`, `1.1 GB`: a download's size as a button shows it (decimal units)."""
    if size_bytes >= 1_000_000_000:
        return f"{size_bytes / 1e9:.1f} GB"
    return f"{max(1, round(size_bytes / 1e6))} MB"


def nothing_set_up(
    provider: str,
    *,
    model_id: str = "",
    title: str = "",
    size_bytes: int = 0,
    key_provider: str = "anthropic",
    server: str = "ollama",
    server_url: str = "http://127.0.0.1:11434",
) -> ProviderError:
    """The first-run `setup` error: no key, no local server, and the local model
    `model_id` is not downloaded (none named: "download a local model"). Its message says
    the three ways out with their commands (a terminal shows only the message); its
    actions are the same as buttons."""
    server_name = {"ollama": "Ollama", "lmstudio": "LM Studio"}.get(server, server)
    key_command = f"moltis secrets set {key_provider}-api-key"
    actions: list[SetupAction] = []
    if model_id:
        size = human_size(size_bytes)
        download_command = f"moltis models local download {model_id}"
        first = f"use the local model {title or model_id} (download {size}: `{download_command}`)"
        actions.append(
            SetupAction(
                "download_model",
                f"Download {title or model_id} ({size})",
                model_id=model_id,
                title=title or model_id,
                size_bytes=size_bytes,
                command=download_command,
            )
        )
    else:
        first = "download a local model (`moltis models local download`)"
    actions += [
        SetupAction(
            "add_key",
            "Add an API key",
            provider=key_provider,
            secret=f"{key_provider}-api-key",
            command=key_command,
        ),
        SetupAction(
            "start_server",
            f"I started {server_name} — try again",
            provider=server,
            url=server_url,
            command="ollama serve" if server == "ollama" else "",
        ),
    ]
    return ProviderError(
        provider,
        "setup",
        f"no model is set up yet: {first}, add an API key (`{key_command}`), or start "
        f"{server_name}",
        actions=tuple(actions),
    )


# ---------------------------------------------------------------------------- the interface


class Provider(Protocol):
    """A configured provider instance (one per entry in `[providers]`)."""

    id: str
    """Our id for it (`anthropic`, `ollama`, `work-openai`, …)."""
    capabilities: ProviderCapabilities

    def stream(self, request: CompletionRequest) -> AsyncIterator[ProviderEvent]:
        """Run one model call, yielding deltas and ending with exactly one `Completed`.
        Raises `ProviderError`."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models the provider's model-list endpoint reports (raises `ProviderError`)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class ProviderSpec:
    """How to build a provider kind: registered through the plugin hook."""

    kind: str
    """`anthropic`, `openai` (the wire API)."""
    factory: Any
    """`factory(config: ProviderConfig, api_key: str | None) -> Provider`."""
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
