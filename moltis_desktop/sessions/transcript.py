"""Transcript entries (pi-coding-agent's JSONL shape): validation, history window, previews."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from moltis_desktop.sessions.entry import SessionError
from moltis_desktop.sessions.jsonl import iter_lines

TRANSCRIPT_VERSION = 1
ENTRY_TYPES = frozenset({"message", "compaction", "custom", "custom_message", "branch_summary"})
"""Entry types a transcript holds after its `session` header line."""
ROLES = frozenset({"user", "assistant", "toolResult"})
CONTEXT_TYPES = frozenset({"message", "custom_message", "branch_summary"})
"""Entry types that are part of what the model sees (`custom` is extension data only)."""


def iso_timestamp(ms: int) -> str:
    """`2026-01-15T04:00:00.000Z`, as pi-coding-agent writes them."""
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_timestamp(value: object) -> int | None:
    """Epoch milliseconds from an ISO timestamp or a number; None when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return None
    return None


def new_entry_id() -> str:
    """An entry id: 64 random bits, unique within any transcript in practice."""
    return uuid.uuid4().hex[:16]


def header(session_id: str, key: str, now_ms: int, cwd: str | None) -> dict[str, Any]:
    """The first line of a transcript. `sessionKey` is ours (OpenClaw's header has no key):
    it lets a lost index be rebuilt from the transcripts."""
    record: dict[str, Any] = {
        "type": "session",
        "version": TRANSCRIPT_VERSION,
        "id": session_id,
        "timestamp": iso_timestamp(now_ms),
        "sessionKey": key,
    }
    if cwd:
        record["cwd"] = cwd
    return record


def validate_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `entry` checked for the shape its type needs; raises `SessionError`."""
    if not isinstance(entry, Mapping):
        raise SessionError(f"a transcript entry must be an object, not {type(entry).__name__}")
    kind = entry.get("type")
    if kind not in ENTRY_TYPES:
        raise SessionError(
            f"unknown transcript entry type {kind!r}; expected one of {sorted(ENTRY_TYPES)}"
        )
    for name in ("id", "parentId"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise SessionError(f"a transcript entry's {name} must be a string")
    if kind == "message":
        message = entry.get("message")
        if not isinstance(message, Mapping):
            raise SessionError("a message entry needs `message: {role, content}`")
        if message.get("role") not in ROLES:
            raise SessionError(
                f"message role {message.get('role')!r} must be user, assistant or toolResult"
            )
        content = message.get("content")
        if not isinstance(content, str | list):
            raise SessionError("a message's content must be a list of blocks (or a string)")
        if isinstance(content, list) and not all(isinstance(b, Mapping) for b in content):
            raise SessionError("a message's content blocks must be objects with a `type`")
        if message["role"] == "toolResult" and not isinstance(message.get("toolCallId"), str):
            raise SessionError("a toolResult message needs its `toolCallId`")
    elif kind == "compaction":
        if not isinstance(entry.get("summary"), str):
            raise SessionError("a compaction entry needs its `summary` text")
    elif kind == "custom" and not isinstance(entry.get("customType"), str):
        raise SessionError("a custom entry needs a `customType`")
    try:
        msgspec.json.encode(entry)
    except (TypeError, msgspec.EncodeError) as exc:
        raise SessionError(f"a transcript entry must be plain JSON data: {exc}") from None
    return dict(entry)


def stamp_entry(entry: dict[str, Any], parent_id: str | None, now_ms: int) -> dict[str, Any]:
    """The entry with `type, id, parentId, timestamp` first (given values win)."""
    entry_id = entry.pop("id", None) or new_entry_id()
    parent = entry.pop("parentId", None) or parent_id
    stamp = entry.pop("timestamp", None) or iso_timestamp(now_ms)
    kind = entry.pop("type")
    return {"type": kind, "id": entry_id, "parentId": parent, "timestamp": stamp, **entry}


def _role(entry: Mapping[str, Any]) -> str | None:
    message = entry.get("message")
    return message.get("role") if isinstance(message, Mapping) else None


def history_window(entries: Iterable[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """What the model is sent: after the last compaction, its entry (the summary) followed by
    the context entries from its `firstKeptEntryId` on; otherwise every context entry.

    `limit` keeps only the last that many context entries (the summary is always kept). A
    tool result whose call was cut off (by the limit or the compaction) is dropped, since
    providers refuse a result without its call.
    """
    items = list(entries)
    last = None
    for index, entry in enumerate(items):
        if entry.get("type") == "compaction":
            last = index
    start, summary = 0, None
    if last is not None:
        summary = items[last]
        start = last + 1
        kept = summary.get("firstKeptEntryId")
        for index in range(last):
            if kept and items[index].get("id") == kept:
                start = index
                break
    window = [e for e in items[start:] if e.get("type") in CONTEXT_TYPES]
    if limit is not None and len(window) > limit:
        window = window[len(window) - limit :] if limit > 0 else []
    while window and _role(window[0]) == "toolResult":
        window.pop(0)
    return ([summary] if summary is not None else []) + window


def message_text(message: Mapping[str, Any]) -> str:
    """The text blocks of a message joined (a string content is the text itself)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        block["text"]
        for block in content
        if isinstance(block, Mapping)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return "\n".join(texts)


def preview_items(
    entries: Iterable[dict[str, Any]], limit: int, max_chars: int
) -> list[dict[str, Any]]:
    """The last `limit` messages with text as `{role, text, timestamp}`, each text cut to
    `max_chars` characters (an ellipsis marks the cut)."""
    items: list[dict[str, Any]] = []
    for entry in entries:
        message = entry.get("message")
        if entry.get("type") != "message" or not isinstance(message, Mapping):
            continue
        text = message_text(message).strip()
        if not text:
            continue
        if len(text) > max_chars:
            text = text[: max(0, max_chars - 1)].rstrip() + "…"
        role, stamp = message.get("role"), entry.get("timestamp")
        items.append({"role": role, "text": text, "timestamp": stamp})
    return items[-limit:] if limit > 0 else []


class _Head(msgspec.Struct):
    # Only what finding the last entry id needs: decoding skips the rest of a line (which
    # may hold megabytes of base64 images) without building it.
    type: str = ""
    id: str | None = None


@dataclass(frozen=True)
class TranscriptTail:
    """Where a transcript ended the last time it was looked at, and its last entry's id."""

    inode: int
    size: int
    last_id: str | None


def scan_tail(path: Path, known: TranscriptTail | None) -> TranscriptTail | None:
    """The transcript's current tail, read from where `known` left off when the file only
    grew since (transcripts are append-only), else from the start. None when the file does
    not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    if known is not None and known.inode == stat.st_ino:
        if known.size == stat.st_size:
            return known
        start, last_id = (known.size, known.last_id) if known.size < stat.st_size else (0, None)
    else:
        start, last_id = 0, None
    end = start
    for end, raw in iter_lines(path, start):  # noqa: B007 - `end` is used after the loop
        try:
            head = msgspec.json.decode(raw, type=_Head)
        except msgspec.DecodeError:
            continue
        if head.type != "session" and head.id:
            last_id = head.id
    return TranscriptTail(stat.st_ino, end, last_id)
