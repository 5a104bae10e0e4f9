"""Anthropic's Messages API over the official SDK: streaming, tool use, extended thinking
and prompt caching, translated to and from our neutral types.

The SDK is imported on first use, in a worker thread (it takes over a second to load), so
importing this module costs nothing. Retries of 429/5xx/connection errors (honouring
`retry-after`) are the SDK's; this module only maps what is left to `ProviderError`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moltis_desktop.providers.base import (
    Completed,
    CompletionRequest,
    ImagePart,
    Message,
    ModelInfo,
    Part,
    ProviderError,
    ProviderEvent,
    StopReason,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingLevel,
    ThinkingPart,
    ToolCall,
    ToolCallReady,
    ToolCallStarted,
    ToolResult,
    Usage,
)
from moltis_desktop.providers.errors import (
    connection_error,
    error_details,
    parse_tool_arguments,
    retry_after,
    status_error,
    stream_transport_error,
    transport_errors,
)
from moltis_desktop.providers.sdk import SdkProvider

_LOGGER = logging.getLogger(__name__)

THINKING_BUDGETS: dict[ThinkingLevel, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 4096,
    "high": 8192,
    "xhigh": 16_384,
}
"""Extended-thinking `budget_tokens` per level (1024 is the API's minimum)."""
_EFFORTS: dict[ThinkingLevel, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
}
ADAPTIVE_THINKING_MODELS = ("claude-opus-4-6", "claude-mythos")
"""Model id prefixes that take `thinking: {type: adaptive}` + an effort instead of a
budget (the SDK deprecates budgets for them)."""
REDACTED_PREFIX = "redacted:"
"""A `ThinkingPart` whose signature starts with this carries a `redacted_thinking` block's
data (the API requires it back verbatim)."""
_EPHEMERAL = {"type": "ephemeral"}
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
}
_warned: set[str] = set()


# ---------------------------------------------------------------------------- requests


def _block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        # The API refuses empty text blocks.
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        source = {"type": "base64", "media_type": part.media_type, "data": part.data}
        return {"type": "image", "source": source}
    if isinstance(part, ThinkingPart):
        if part.signature.startswith(REDACTED_PREFIX):
            return {"type": "redacted_thinking", "data": part.signature[len(REDACTED_PREFIX) :]}
        # Unsigned reasoning (from another provider) cannot be replayed to Anthropic.
        if not part.signature:
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": dict(part.arguments)}
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": part.call_id,
        "content": part.content,
    }
    if part.is_error:
        block["is_error"] = True
    return block


def to_anthropic_messages(messages: Iterable[Message], *, cache: bool) -> list[dict[str, Any]]:
    """Our messages as Messages-API turns; with `cache`, the history's last block carries a
    cache breakpoint so the next call reads the whole prefix from the cache."""
    out: list[dict[str, Any]] = []
    for message in messages:
        parts: Sequence[Part] = message.parts
        if message.role == "user":
            # tool_result blocks must come first in their user turn.
            parts = sorted(parts, key=lambda p: not isinstance(p, ToolResult))
        blocks = [b for b in map(_block, parts) if b is not None]
        if blocks:
            out.append({"role": message.role, "content": blocks})
    if cache and out:
        for block in reversed(out[-1]["content"]):
            if block["type"] not in ("thinking", "redacted_thinking"):
                block["cache_control"] = dict(_EPHEMERAL)
                break
    return out


def build_params(request: CompletionRequest, *, cache: bool) -> dict[str, Any]:
    """The keyword arguments of `messages.stream` for `request`."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": to_anthropic_messages(request.messages, cache=cache),
    }
    if request.system:
        system: dict[str, Any] = {"type": "text", "text": request.system}
        if cache:
            # Tools come before the system prompt in the prefix, so this caches both.
            system["cache_control"] = dict(_EPHEMERAL)
        params["system"] = [system]
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
    level = request.thinking
    if level != "off":
        if request.model.startswith(ADAPTIVE_THINKING_MODELS):
            params["thinking"] = {"type": "adaptive"}
            params["output_config"] = {"effort": _EFFORTS[level]}
        else:
            budget = THINKING_BUDGETS[level]
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
            if request.max_tokens <= budget:
                # The budget is part of max_tokens: keep the asked-for room for the answer.
                params["max_tokens"] = budget + request.max_tokens
    elif request.temperature is not None:
        # Thinking requires the default temperature, so it is only sent without thinking.
        params["temperature"] = request.temperature
    return params


# ---------------------------------------------------------------------------- responses


@dataclass
class _Block:
    kind: str
    text: list[str] = field(default_factory=list)
    signature: str = ""
    call_id: str = ""
    name: str = ""
    ordinal: int = 0


@dataclass
class _Reply:
    """What the stream has said so far."""

    blocks: dict[int, _Block] = field(default_factory=dict)
    parts: list[tuple[int, Part]] = field(default_factory=list)
    tools: int = 0
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    stopped: bool = False

    def message(self) -> Message:
        return Message("assistant", tuple(p for _i, p in sorted(self.parts, key=lambda x: x[0])))


def _usage(raw: Any, previous: Usage) -> Usage:
    """Fields present in `raw` replace those of `previous` (message_delta repeats them)."""

    def pick(name: str, old: int) -> int:
        value = getattr(raw, name, None)
        return old if value is None else int(value)

    return Usage(
        input_tokens=pick("input_tokens", previous.input_tokens),
        output_tokens=pick("output_tokens", previous.output_tokens),
        cache_read_tokens=pick("cache_read_input_tokens", previous.cache_read_tokens),
        cache_write_tokens=pick("cache_creation_input_tokens", previous.cache_write_tokens),
    )


class AnthropicProvider(SdkProvider):
    """A provider speaking the Messages API (Anthropic, or a server compatible with it)."""

    sdk_module = "anthropic"
    client_class = "AsyncAnthropic"

    def _open_stream(self, client: Any, params: dict[str, Any]) -> Any:
        # The SDK warns (warnings module) about deprecated models and thinking settings;
        # those belong in our log, once, not on stderr or as test failures. No await
        # happens in this block, so no other task's warnings are caught.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            manager = client.messages.stream(**params)
        for warning in caught:
            text = str(warning.message)
            if text not in _warned:
                _warned.add(text)
                _LOGGER.warning("anthropic SDK: %s", text)
        return manager

    async def stream(self, request: CompletionRequest) -> AsyncIterator[ProviderEvent]:
        """Run one Messages call; see `Provider.stream`."""
        client = await self.client()
        sdk = sys.modules["anthropic"]
        params = build_params(request, cache=request.cache and self.capabilities.prompt_caching)
        reply = _Reply()
        try:
            async with self._open_stream(client, params) as events:
                async for event in events:
                    for out in self._on_event(event, reply):
                        yield out
        except sdk.AnthropicError as exc:
            raise self.error(exc, model=request.model) from exc
        except transport_errors() as exc:
            raise stream_transport_error(self.config, exc, model=request.model) from exc
        if not reply.stopped:
            raise status_error(self.config, None, "the stream ended early", model=request.model)
        stop = _STOP_REASONS.get(reply.stop_reason or "", "other")
        yield Completed(reply.message(), stop, reply.usage)

    def _on_event(self, event: Any, reply: _Reply) -> list[ProviderEvent]:
        kind = event.type
        if kind == "content_block_delta":
            return self._on_delta(event, reply)
        if kind == "message_start":
            reply.usage = _usage(event.message.usage, reply.usage)
        elif kind == "content_block_start":
            return self._on_start(event, reply)
        elif kind == "content_block_stop":
            return self._on_stop(event.index, reply)
        elif kind == "message_delta":
            reply.stop_reason = event.delta.stop_reason or reply.stop_reason
            if event.usage is not None:
                reply.usage = _usage(event.usage, reply.usage)
        elif kind == "message_stop":
            reply.stopped = True
        # The SDK's own convenience events ("text", "input_json", …) repeat the raw ones.
        return []

    def _on_start(self, event: Any, reply: _Reply) -> list[ProviderEvent]:
        raw = event.content_block
        block = _Block(raw.type)
        reply.blocks[event.index] = block
        if raw.type == "text" and raw.text:
            block.text.append(raw.text)
            return [TextDelta(raw.text)]
        if raw.type == "redacted_thinking":
            block.signature = REDACTED_PREFIX + raw.data
        elif raw.type == "tool_use":
            block.call_id, block.name, block.ordinal = raw.id, raw.name, reply.tools
            reply.tools += 1
            return [ToolCallStarted(block.ordinal, raw.id, raw.name)]
        return []

    @staticmethod
    def _on_delta(event: Any, reply: _Reply) -> list[ProviderEvent]:
        block = reply.blocks.get(event.index)
        delta = event.delta
        if block is None:
            return []
        if delta.type == "text_delta":
            block.text.append(delta.text)
            return [TextDelta(delta.text)]
        if delta.type == "thinking_delta":
            block.text.append(delta.thinking)
            return [ThinkingDelta(delta.thinking)]
        if delta.type == "signature_delta":
            block.signature += delta.signature
        elif delta.type == "input_json_delta":
            block.text.append(delta.partial_json)
        return []

    def _on_stop(self, index: int, reply: _Reply) -> list[ProviderEvent]:
        block = reply.blocks.get(index)
        if block is None:
            return []
        text = "".join(block.text)
        if block.kind == "text":
            reply.parts.append((index, TextPart(text)))
        elif block.kind in ("thinking", "redacted_thinking"):
            reply.parts.append((index, ThinkingPart(text, block.signature)))
        elif block.kind == "tool_use":
            args = parse_tool_arguments(self.id, block.name, text)
            call = ToolCall(block.call_id, block.name, args)
            reply.parts.append((index, call))
            return [ToolCallReady(block.ordinal, call)]
        return []

    # ------------------------------------------------------------------------ models

    async def list_models(self) -> list[ModelInfo]:
        """The models GET /v1/models reports (all pages)."""
        client = await self.client()
        sdk = sys.modules["anthropic"]
        models: list[ModelInfo] = []
        try:
            async for raw in client.models.list(limit=1000):
                models.append(self._model_info(raw))
        except sdk.AnthropicError as exc:
            raise self.error(exc, listing=True) from exc
        return models

    def _model_info(self, raw: Any) -> ModelInfo:
        known = self.config.known_model(raw.id)
        caps = getattr(raw, "capabilities", None)

        def supported(name: str, default: bool) -> bool:
            support = getattr(caps, name, None) if caps is not None else None
            value = getattr(support, "supported", None)
            return default if value is None else bool(value)

        return ModelInfo(
            id=raw.id,
            provider=self.id,
            name=getattr(raw, "display_name", "") or (known.name if known else "") or raw.id,
            context_window=getattr(raw, "max_input_tokens", None)
            or (known.context_window if known else self.capabilities.default_context_window),
            max_output_tokens=getattr(raw, "max_tokens", None)
            or (known.max_output_tokens if known else None),
            reasoning=supported(
                "thinking", known.reasoning if known else self.capabilities.thinking
            ),
            vision=supported("image_input", known.vision if known else self.capabilities.vision),
            source="discovered",
        )

    # ------------------------------------------------------------------------ errors

    def error(self, exc: Exception, *, model: str = "", listing: bool = False) -> ProviderError:
        """The `ProviderError` for an exception the SDK raised."""
        sdk = sys.modules["anthropic"]
        if isinstance(exc, sdk.APITimeoutError):
            return connection_error(self.config, "timed out", timed_out=True)
        if isinstance(exc, sdk.APIConnectionError):
            reason = str(exc.__cause__ or "") or str(exc)
            return connection_error(self.config, reason, timed_out=False)
        if isinstance(exc, sdk.APIStatusError):
            error_type, code, detail = error_details(exc.body, exc.message)
            # An error event inside a stream arrives with the stream's 200 status.
            status = exc.status_code if exc.status_code >= 400 else None
            return status_error(
                self.config,
                status,
                detail,
                model=model,
                error_type=error_type,
                code=code,
                retry_after_s=retry_after(exc.response.headers),
                listing=listing,
            )
        if isinstance(exc, getattr(sdk, "CredentialsError", ())):
            return ProviderError(self.id, "auth", f"{self.id} credentials: {exc}")
        return ProviderError(self.id, "server", f"{self.id} failed: {exc}")
