"""Between the neutral `Message` and the transcript's JSON entries (OpenClaw's JSONL shape:
roles user / assistant / toolResult, content blocks text / image / thinking / toolCall)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from moltis_desktop.providers.base import (
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCall,
    ToolResult,
    Usage,
)


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image", "mimeType": part.media_type, "data": part.data}
    if isinstance(part, ThinkingPart):
        block: dict[str, Any] = {"type": "thinking", "thinking": part.text}
        if part.signature:
            block["signature"] = part.signature
        return block
    if isinstance(part, ToolCall):
        return {
            "type": "toolCall",
            "id": part.id,
            "name": part.name,
            "arguments": dict(part.arguments),
        }
    raise TypeError(f"{type(part).__name__} is not a content block")


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cacheRead": usage.cache_read_tokens,
        "cacheWrite": usage.cache_write_tokens,
        "totalTokens": usage.total_tokens,
    }


def assistant_text_entry(text: str, **meta: Any) -> dict[str, Any]:
    """The transcript entry of an assistant message that is only `text` (an aborted reply,
    an injected note, a delivery), with `meta` fields (None ones left out)."""
    (entry,) = to_entries(Message("assistant", (TextPart(text),)), **meta)
    return entry


def to_entries(message: Message, **meta: Any) -> list[dict[str, Any]]:
    """Transcript `message` entries for one neutral message (tool results become one
    `toolResult` entry each)."""
    results = [p for p in message.parts if isinstance(p, ToolResult)]
    others = [p for p in message.parts if not isinstance(p, ToolResult)]
    entries: list[dict[str, Any]] = []
    if others or not results:
        body: dict[str, Any] = {"role": message.role, "content": [_block(p) for p in others]}
        body.update({k: v for k, v in meta.items() if v is not None})
        entries.append({"type": "message", "message": body})
    for result in results:
        entries.append(
            {
                "type": "message",
                "message": {
                    "role": "toolResult",
                    "toolCallId": result.call_id,
                    "toolName": result.name,
                    "isError": result.is_error,
                    "content": [{"type": "text", "text": result.content}],
                },
            }
        )
    return entries


def _part(block: Mapping[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return TextPart(str(block.get("text", "")))
    if kind == "image":
        return ImagePart(str(block.get("mimeType", "image/png")), str(block.get("data", "")))
    if kind == "thinking":
        return ThinkingPart(str(block.get("thinking", "")), str(block.get("signature", "")))
    if kind == "toolCall":
        return ToolCall(
            str(block.get("id")), str(block.get("name")), dict(block.get("arguments") or {})
        )
    return None


def text_of(content: Any) -> str:
    """The text blocks of a message's `content`, joined (a string is the text itself)."""
    if isinstance(content, str):
        return content
    return "".join(
        str(b.get("text", ""))
        for b in content or []
        if isinstance(b, dict) and b.get("type") == "text"
    )


INTERRUPTED = (
    "error: this tool call was interrupted (the reply was stopped or the gateway "
    "restarted) and has no result"
)


def to_messages(entries: Iterable[Mapping[str, Any]]) -> list[Message]:
    """Neutral messages from transcript entries (as `SessionStore.history` returns them).

    Consecutive tool results become one user message; a tool call left without a result
    (a crash or an abort while tools ran) gets an "interrupted" error result, since
    providers refuse a history with unanswered calls; a compaction summary is put in front
    of the first user message after it; the result starts with a user message.
    """
    messages: list[Message] = []
    pending_results: list[ToolResult] = []
    open_calls: dict[str, str] = {}
    summary: str | None = None

    def flush() -> None:
        for call_id, name in open_calls.items():
            pending_results.append(ToolResult(call_id, name, INTERRUPTED, is_error=True))
        open_calls.clear()
        if pending_results:
            messages.append(Message("user", tuple(pending_results)))
            pending_results.clear()

    for entry in entries:
        if entry.get("type") == "compaction":
            summary = str(entry.get("summary", ""))
            continue
        if entry.get("type") != "message":
            continue
        body = entry.get("message") or {}
        role = body.get("role")
        if role == "toolResult":
            call_id = str(body.get("toolCallId"))
            if call_id not in open_calls:
                continue  # its call is gone (cut by compaction): providers refuse it alone
            open_calls.pop(call_id)
            pending_results.append(
                ToolResult(
                    call_id,
                    str(body.get("toolName", "")),
                    text_of(body.get("content")),
                    bool(body.get("isError")),
                )
            )
            continue
        flush()
        content = body.get("content")
        if isinstance(content, str):
            parts: list[Part] = [TextPart(content)]
        else:
            parts = [p for b in content or [] if isinstance(b, dict) and (p := _part(b))]
        if role == "user":
            if summary is not None:
                parts.insert(0, TextPart(f"[Summary of the earlier conversation]\n{summary}\n\n"))
                summary = None
            messages.append(Message("user", tuple(parts)))
        elif role == "assistant" and parts:
            message = Message("assistant", tuple(parts))
            messages.append(message)
            open_calls = {c.id: c.name for c in message.tool_calls}
    flush()
    if summary is not None:
        messages.insert(
            0, Message("user", (TextPart(f"[Summary of the earlier conversation]\n{summary}"),))
        )
    while messages and messages[0].role != "user":
        messages.pop(0)
    return messages
