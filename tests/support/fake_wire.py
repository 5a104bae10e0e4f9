"""The wire formats `FakeLLM` speaks: scripted turns rendered as Anthropic Messages and
OpenAI Chat Completions responses, SSE events, model lists and error bodies, shaped as
the real APIs send them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from moltis_desktop.providers.base import Usage

CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z
DEFAULT_USAGE = Usage(input_tokens=10, output_tokens=5)

ToolCallScript = tuple[str, Mapping[str, Any]] | tuple[str, str, Mapping[str, Any]]
"""`(name, arguments)` or `(id, name, arguments)`."""


@dataclass(frozen=True)
class Turn:
    """One scripted model response, usable by either API."""

    text: str = ""
    chunks: int = 3
    """Deltas the text (and the thinking) is split into."""
    thinking: str = ""
    """Reasoning: an Anthropic thinking block (with `signature`), OpenAI `reasoning_content`."""
    signature: str = "sig-fake-0123456789"
    tool_calls: Sequence[ToolCallScript] = ()
    """Tool calls, in order, after the text; each one's arguments stream in 3 fragments."""
    usage: Usage | None = None
    """Reported exactly: Anthropic's cache_creation/cache_read_input_tokens; OpenAI's
    prompt_tokens (input + cached + cache writes) with prompt_tokens_details."""
    stop_reason: str = ""
    """Anthropic's name (`end_turn`, `tool_use`, `max_tokens`, `stop_sequence`, `refusal`);
    mapped to OpenAI's finish_reason. Default: `tool_use` with tool calls, else `end_turn`."""
    error: int | tuple[int, Mapping[str, str]] | None = None
    """Answer with this HTTP status (and headers) in the API's error shape."""
    error_message: str = ""
    error_type: str = ""
    """Overrides the error `type` (e.g. `overloaded_error`)."""
    error_code: str = ""
    """OpenAI's error `code` (e.g. `context_length_exceeded`)."""
    stream_error: str = ""
    """Error type sent as an in-stream error event after the content (the stream then ends)."""
    delay_s: float = 0.0
    """Pause before each content delta (before the body when not streaming)."""
    hang: bool = False
    """Stall after the first content delta until the client goes away."""
    model: str = ""
    """Model reported in the response; default: the requested one."""
    ollama_tools: bool = False
    """Stream tool calls as Ollama does: each call whole in one chunk, every one at index 0,
    and finish_reason `stop` rather than `tool_calls`."""

    def calls(self, prefix: str, serial: int) -> list[tuple[str, str, Mapping[str, Any]]]:
        out = []
        for i, call in enumerate(self.tool_calls):
            if len(call) == 3:
                out.append(call)
            else:
                out.append((f"{prefix}{serial:02d}{i}", call[0], call[1]))
        return out

    @property
    def reported_usage(self) -> Usage:
        return self.usage or DEFAULT_USAGE

    @property
    def anthropic_stop(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_calls else "end_turn")


@dataclass(frozen=True)
class FakeModel:
    """An entry of GET /v1/models."""

    id: str
    display_name: str = ""
    context_window: int | None = None
    """Anthropic's `max_input_tokens` (OpenAI's list has no such field)."""


@dataclass(frozen=True)
class Event:
    """One SSE message."""

    data: Mapping[str, Any] | None = None
    name: str | None = None
    raw: bytes = b""
    content: bool = False
    """A content delta (paced by `delay_s`)."""
    hang_after: bool = False

    def encode(self) -> bytes:
        if self.raw:
            return self.raw
        payload = json.dumps(self.data, separators=(",", ":"))
        head = f"event: {self.name}\n" if self.name else ""
        return f"{head}data: {payload}\n\n".encode()


def split(text: str, n: int) -> list[str]:
    """`text` in `n` nearly equal pieces (fewer when it is shorter than `n`)."""
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _mark_first_content(events: list[Event]) -> list[Event]:
    """Put the hang point after the first content delta (or the first event)."""
    for i, event in enumerate(events):
        if event.content:
            events[i] = Event(event.data, event.name, content=True, hang_after=True)
            return events
    events[0] = Event(events[0].data, events[0].name, hang_after=True)
    return events


# ---------------------------------------------------------------------------- anthropic

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _anthropic_usage(usage: Usage, *, output: int) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": output,
    }


def anthropic_events(turn: Turn, model: str, serial: int) -> list[Event]:
    """The SSE events of a streamed Messages response, as Anthropic sends them."""
    usage = turn.reported_usage
    events = [
        Event(
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_fake{serial:04d}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    # Anthropic reports a placeholder output count here; the real one
                    # comes in message_delta.
                    "usage": _anthropic_usage(usage, output=1),
                },
            },
            "message_start",
        ),
        Event({"type": "ping"}, "ping"),
    ]
    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        events.append(
            Event(
                {"type": "content_block_start", "index": index, "content_block": start},
                "content_block_start",
            )
        )
        for delta in deltas:
            events.append(
                Event(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                    content=True,
                )
            )
        events.append(Event({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1

    if turn.thinking:
        deltas = [
            {"type": "thinking_delta", "thinking": p} for p in split(turn.thinking, turn.chunks)
        ]
        deltas.append({"type": "signature_delta", "signature": turn.signature})
        block({"type": "thinking", "thinking": "", "signature": ""}, deltas)
    if turn.text:
        block(
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": p} for p in split(turn.text, turn.chunks)],
        )
    for call_id, name, args in turn.calls("toolu_fake", serial):
        fragments = ["", *split(json.dumps(args), 3)]
        block(
            {"type": "tool_use", "id": call_id, "name": name, "input": {}},
            [{"type": "input_json_delta", "partial_json": f} for f in fragments],
        )
        events.append(Event({"type": "ping"}, "ping"))
    if turn.stream_error:
        error = {"type": turn.stream_error, "message": turn.error_message or "Overloaded"}
        events.append(Event({"type": "error", "error": error}, "error"))
        return _mark_first_content(events)
    events.append(
        Event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": turn.anthropic_stop, "stop_sequence": None},
                "usage": _anthropic_usage(usage, output=usage.output_tokens),
            },
            "message_delta",
        )
    )
    events.append(Event({"type": "message_stop"}, "message_stop"))
    return _mark_first_content(events)


def anthropic_message(turn: Turn, model: str, serial: int) -> dict[str, Any]:
    """A non-streamed Messages response."""
    content: list[dict[str, Any]] = []
    if turn.thinking:
        content.append({"type": "thinking", "thinking": turn.thinking, "signature": turn.signature})
    if turn.text:
        content.append({"type": "text", "text": turn.text})
    for call_id, name, args in turn.calls("toolu_fake", serial):
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": dict(args)})
    usage = turn.reported_usage
    return {
        "id": f"msg_fake{serial:04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": turn.anthropic_stop,
        "stop_sequence": None,
        "usage": _anthropic_usage(usage, output=usage.output_tokens),
    }


def anthropic_error(
    status: int, message: str = "", headers: Mapping[str, str] | None = None, kind: str = ""
) -> web.Response:
    body = {
        "type": "error",
        "error": {
            "type": kind or _ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
            "message": message or f"fake error {status}",
        },
        "request_id": "req_fake",
    }
    return web.json_response(body, status=status, headers=dict(headers or {}))


def anthropic_models(models: Sequence[FakeModel]) -> dict[str, Any]:
    data = []
    for m in models:
        entry: dict[str, Any] = {
            "type": "model",
            "id": m.id,
            "display_name": m.display_name or m.id,
            "created_at": "2025-01-01T00:00:00Z",
        }
        if m.context_window:
            entry["max_input_tokens"] = m.context_window
        data.append(entry)
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


# ---------------------------------------------------------------------------- openai

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def openai_chunks(turn: Turn, model: str, serial: int, *, include_usage: bool) -> list[Event]:
    """The `data:` chunks of a streamed Chat Completion, ending with `data: [DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None, *, content: bool = True) -> Event:
        data: dict[str, Any] = {
            "id": f"chatcmpl-fake{serial:04d}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return Event(data, content=content)

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, content=False)]
    if turn.thinking:
        events += [chunk({"reasoning_content": p}) for p in split(turn.thinking, turn.chunks)]
    if turn.text:
        events += [chunk({"content": p}) for p in split(turn.text, turn.chunks)]
    for i, (call_id, name, args) in enumerate(turn.calls("call_fake", serial)):
        if turn.ollama_tools:
            whole = {"name": name, "arguments": json.dumps(args)}
            events.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "function": whole}]}))
            continue
        head = {"index": i, "id": call_id, "type": "function"}
        events.append(
            chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        )
        for fragment in split(json.dumps(args), 3):
            events.append(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
            )
    if turn.stream_error:
        error = {
            "message": turn.error_message or "The server had an error",
            "type": turn.stream_error,
            "param": None,
            "code": turn.error_code or None,
        }
        events.append(Event({"error": error}))
        return _mark_first_content(events)
    finish = "stop" if turn.ollama_tools else _FINISH.get(turn.anthropic_stop, "stop")
    events.append(chunk({}, finish, content=False))
    if include_usage:
        last = dict(events[-1].data or {})
        last.update(choices=[], usage=_openai_usage(turn.reported_usage))
        events.append(Event(last))
    events.append(Event(raw=b"data: [DONE]\n\n"))
    return _mark_first_content(events)


def openai_completion(turn: Turn, model: str, serial: int) -> dict[str, Any]:
    """A non-streamed Chat Completion."""
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None, "refusal": None}
    calls = turn.calls("call_fake", serial)
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for cid, n, a in calls
        ]
    if turn.thinking:
        message["reasoning_content"] = turn.thinking
    return {
        "id": f"chatcmpl-fake{serial:04d}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH.get(turn.anthropic_stop, "stop"),
            }
        ],
        "usage": _openai_usage(turn.reported_usage),
    }


def openai_error(
    status: int,
    message: str = "",
    headers: Mapping[str, str] | None = None,
    kind: str = "",
    code: str = "",
) -> web.Response:
    default_type, default_code = _OPENAI_ERRORS.get(status, ("server_error", None))
    body = {
        "error": {
            "message": message or f"fake error {status}",
            "type": kind or default_type,
            "param": None,
            "code": code or default_code,
        }
    }
    return web.json_response(body, status=status, headers=dict(headers or {}))


def openai_models(models: Sequence[FakeModel]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m.id, "object": "model", "created": CREATED, "owned_by": "fake"} for m in models
        ],
    }


def error_status(turn: Turn) -> tuple[int, dict[str, str]]:
    """The HTTP status and headers of an error turn."""
    assert turn.error is not None
    if isinstance(turn.error, int):
        return turn.error, {}
    status, headers = turn.error
    return status, dict(headers)
