"""OpenAI's Chat Completions over the official SDK, for OpenAI itself and every server that
speaks it (Gemini, Groq, xAI, DeepSeek, OpenRouter, Mistral, Ollama, LM Studio, …).

Streaming with the usage chunk, tool calls assembled from their argument fragments
(several in parallel), tool results as `tool` messages, images as data URLs, and the
thinking level as `reasoning_effort` for the models that take it. Usage is normalised to
Anthropic's convention: `input_tokens` excludes the cached and cache-written tokens that
OpenAI counts inside `prompt_tokens`. The SDK is imported on first use, off the event loop.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
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
from moltis_desktop.providers.resolved import ProviderConfig
from moltis_desktop.providers.sdk import SdkProvider

REASONING_EFFORTS: dict[ThinkingLevel, tuple[str, ...]] = {
    "minimal": ("low", "medium", "high"),
    "low": ("low", "medium", "high"),
    "medium": ("medium", "high", "low"),
    "high": ("high", "medium", "low"),
    "xhigh": ("high", "medium", "low"),
}
"""`reasoning_effort` per level, in order of preference: the first value the preset
accepts is sent (servers differ: some refuse minimal/xhigh, xAI takes only low and high)."""
_FINISH: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_NOT_CHAT = ("embed", "tts", "whisper", "dall-e", "moderation", "transcribe", "davinci", "babbage")
"""Model ids with these in them are not chat models (OpenAI lists them all together)."""


# ---------------------------------------------------------------------------- requests


def _user_content(parts: Iterable[Part]) -> str | list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart) and part.text:
            items.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            url = f"data:{part.media_type};base64,{part.data}"
            items.append({"type": "image_url", "image_url": {"url": url}})
    if not items:
        return None
    if all(item["type"] == "text" for item in items):
        # Plain strings are what every compatible server understands.
        return "".join(item["text"] for item in items)
    return items


def to_openai_messages(system: str, messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Our conversation as Chat Completions messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "assistant":
            text = message.text
            calls = message.tool_calls
            if not text and not calls:
                continue  # e.g. only reasoning, which is not sent back
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))},
                    }
                    for c in calls
                ]
            out.append(entry)
            continue
        # Tool results must directly follow the assistant message that asked for them.
        for part in message.parts:
            if isinstance(part, ToolResult):
                content = f"Error: {part.content}" if part.is_error else part.content
                out.append({"role": "tool", "tool_call_id": part.call_id, "content": content})
        user_content = _user_content(message.parts)
        if user_content is not None:
            out.append({"role": "user", "content": user_content})
    return out


def build_params(request: CompletionRequest, config: ProviderConfig) -> dict[str, Any]:
    """The keyword arguments of `chat.completions.create` for `request`."""
    params: dict[str, Any] = {
        "model": request.model,
        "messages": to_openai_messages(request.system, request.messages),
        "stream": True,
        config.preset.max_tokens_field: request.max_tokens,
    }
    if config.preset.stream_usage:
        params["stream_options"] = {"include_usage": True}
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                },
            }
            for t in request.tools
        ]
    if request.thinking != "off" and config.takes_reasoning_effort(request.model):
        accepted = config.preset.reasoning_efforts
        wanted = REASONING_EFFORTS[request.thinking]
        params["reasoning_effort"] = next((e for e in wanted if e in accepted), wanted[0])
    if request.temperature is not None:
        params["temperature"] = request.temperature
    return params


# ---------------------------------------------------------------------------- responses


@dataclass
class _Call:
    ordinal: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False


@dataclass
class _Reply:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    by_index: dict[int, _Call] = field(default_factory=dict)
    finish: str | None = None
    usage: Usage = field(default_factory=Usage)


def _usage(raw: Any) -> Usage:
    prompt = int(raw.prompt_tokens or 0)
    details = getattr(raw, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", None) or 0)
    written = int(getattr(details, "cache_write_tokens", None) or 0)
    if not cached:
        # DeepSeek reports its cache hits at the top level.
        cached = int(getattr(raw, "prompt_cache_hit_tokens", None) or 0)
    return Usage(
        input_tokens=max(0, prompt - cached - written),
        output_tokens=int(raw.completion_tokens or 0),
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )


class OpenAIProvider(SdkProvider):
    """A provider speaking Chat Completions (OpenAI or any compatible server)."""

    sdk_module = "openai"
    client_class = "AsyncOpenAI"

    async def stream(self, request: CompletionRequest) -> AsyncIterator[ProviderEvent]:
        """Run one Chat Completions call; see `Provider.stream`."""
        client = await self.client()
        sdk = sys.modules["openai"]
        reply = _Reply()
        try:
            params = build_params(request, self.config)
            # The history is already plain JSON: handing it over as `extra_body` skips the
            # SDK's per-message type transform, which costs ~0.2 ms a message (62% of a long
            # session's turn, measured by bench/bench_agent.py).
            body = {k: params.pop(k) for k in ("messages", "tools") if k in params}
            chunks = await client.chat.completions.create(**params, messages=[], extra_body=body)
            async with chunks:
                async for chunk in chunks:
                    for out in self._on_chunk(chunk, reply):
                        yield out
        except sdk.OpenAIError as exc:
            raise self.error(exc, model=request.model) from exc
        except transport_errors() as exc:
            raise stream_transport_error(self.config, exc, model=request.model) from exc
        if reply.finish is None:
            raise status_error(self.config, None, "the stream ended early", model=request.model)
        for call in reply.calls:
            if not call.started:  # a call whose name came late (or never)
                yield self._start(call)
        parts: list[Part] = []
        if reply.reasoning:
            parts.append(ThinkingPart("".join(reply.reasoning)))
        if reply.text:
            parts.append(TextPart("".join(reply.text)))
        for call in reply.calls:
            args = parse_tool_arguments(self.id, call.name, "".join(call.arguments))
            tool_call = ToolCall(call.id, call.name, args)
            parts.append(tool_call)
            yield ToolCallReady(call.ordinal, tool_call)
        stop = _FINISH.get(reply.finish, "other")
        if reply.calls and stop == "end_turn":
            stop = "tool_use"  # some servers say "stop" after tool calls
        yield Completed(Message("assistant", tuple(parts)), stop, reply.usage)

    def _on_chunk(self, chunk: Any, reply: _Reply) -> list[ProviderEvent]:
        if getattr(chunk, "usage", None) is not None:
            reply.usage = _usage(chunk.usage)
        if not chunk.choices:
            return []
        choice = chunk.choices[0]
        if choice.finish_reason:
            reply.finish = choice.finish_reason
        delta = choice.delta
        if delta is None:
            return []
        out: list[ProviderEvent] = []
        # Not in OpenAI's schema: DeepSeek, vLLM and Ollama stream reasoning this way.
        reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
        if isinstance(reasoning, str) and reasoning:
            reply.reasoning.append(reasoning)
            out.append(ThinkingDelta(reasoning))
        if delta.content:
            reply.text.append(delta.content)
            out.append(TextDelta(delta.content))
        for fragment in delta.tool_calls or ():
            out.extend(self._on_tool_fragment(fragment, reply))
        return out

    def _on_tool_fragment(self, fragment: Any, reply: _Reply) -> list[ProviderEvent]:
        index = fragment.index if fragment.index is not None else len(reply.calls)
        call = reply.by_index.get(index)
        if call is None or (fragment.id and call.id and fragment.id != call.id):
            # A new call; some servers reuse index 0 for every call, told apart by id.
            call = _Call(ordinal=len(reply.calls))
            reply.calls.append(call)
            reply.by_index[index] = call
        if fragment.id:
            call.id = fragment.id
        function = fragment.function
        if function is not None:
            if function.name and not call.name:
                call.name = function.name
            if function.arguments:
                call.arguments.append(function.arguments)
        if call.name and not call.started:
            return [self._start(call)]
        return []

    @staticmethod
    def _start(call: _Call) -> ToolCallStarted:
        call.started = True
        if not call.id:  # some servers send no ids; the tool result must name one
            call.id = f"call_{uuid.uuid4().hex[:24]}"
        return ToolCallStarted(call.ordinal, call.id, call.name)

    # ------------------------------------------------------------------------ models

    async def list_models(self) -> list[ModelInfo]:
        """The chat models GET /models reports."""
        client = await self.client()
        sdk = sys.modules["openai"]
        models: list[ModelInfo] = []
        try:
            async for raw in client.models.list():
                if not any(marker in raw.id for marker in _NOT_CHAT):
                    models.append(self._model_info(raw.id))
        except sdk.OpenAIError as exc:
            raise self.error(exc, listing=True) from exc
        return models

    def _model_info(self, model: str) -> ModelInfo:
        known = self.config.known_model(model)
        caps = self.capabilities
        return ModelInfo(
            id=model,
            provider=self.id,
            name=(known.name if known else "") or model,
            context_window=known.context_window if known else caps.default_context_window,
            max_output_tokens=known.max_output_tokens if known else None,
            reasoning=(known.reasoning if known else False)
            or self.config.takes_reasoning_effort(model),
            vision=known.vision if known else caps.vision,
            source="discovered",
        )

    # ------------------------------------------------------------------------ errors

    def error(self, exc: Exception, *, model: str = "", listing: bool = False) -> ProviderError:
        """The `ProviderError` for an exception the SDK raised."""
        sdk = sys.modules["openai"]
        if isinstance(exc, sdk.APITimeoutError):
            return connection_error(self.config, "timed out", timed_out=True)
        if isinstance(exc, sdk.APIConnectionError):
            reason = str(exc.__cause__ or "") or str(exc)
            return connection_error(self.config, reason, timed_out=False)
        if isinstance(exc, sdk.APIError):
            error_type, code, detail = error_details(exc.body, exc.message)
            status = getattr(exc, "status_code", None)  # None: an error inside the stream
            response = getattr(exc, "response", None)
            return status_error(
                self.config,
                status,
                detail,
                model=model,
                error_type=error_type,
                code=code,
                retry_after_s=retry_after(response.headers if response is not None else None),
                listing=listing,
            )
        return ProviderError(self.id, "server", f"{self.id} failed: {exc}")
