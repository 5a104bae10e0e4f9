"""One agent's sessions directory: a locked, atomic, self-healing index and its transcripts."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.core.atomic import atomic_write_bytes, fsync_dir
from moltis_desktop.core.clock import Clock
from moltis_desktop.core.paths import private_dir
from moltis_desktop.sessions.entry import COUNTERS, SessionStoreBusyError
from moltis_desktop.sessions.jsonl import (
    decode_line,
    encode_line,
    read_records,
)
from moltis_desktop.sessions.keys import SessionKey, SessionKeyError, parse_session_key
from moltis_desktop.sessions.transcript import (
    TranscriptTail,
    header,
    iso_timestamp,
    parse_timestamp,
    scan_tail,
)

if TYPE_CHECKING:
    from filelock import FileLock

_LOGGER = logging.getLogger(__name__)

INDEX_NAME = "sessions.json"
STALE_TEMP_S = 60.0
"""Age after which a temp file of an interrupted atomic write is removed (a younger one may
belong to another process writing right now)."""

Index = dict[str, dict[str, Any]]


def file_stamp(ms: int) -> str:
    """A timestamp usable in file names on every OS (`2026-01-15T04-00-00.000Z`)."""
    return iso_timestamp(ms).replace(":", "-")


def unused_name(path: Path) -> Path:
    """`path`, or `path.2`, `path.3`, … whichever does not exist yet (two archives within
    one millisecond must not overwrite each other)."""
    candidate, suffix = path, 1
    while candidate.exists():
        suffix += 1
        candidate = path.with_name(f"{path.name}.{suffix}")
    return candidate


def _decode_index(data: bytes, path: Path) -> Index | None:
    # None means the file is not a JSON object at all (corrupt); entries that are not
    # objects with a sessionId are dropped one by one, keeping the rest.
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    index: Index = {}
    for key, record in raw.items():
        if isinstance(record, dict) and isinstance(record.get("sessionId"), str):
            index[key] = record
        else:
            _LOGGER.warning("Dropped unreadable entry %r from %s", key, path)
    return index


def _rebuilt_record(path: Path) -> tuple[str, dict[str, Any]] | None:
    records = read_records(path)
    if not records or records[0].get("type") != "session":
        return None
    head = records[0]
    try:
        parsed = parse_session_key(str(head.get("sessionKey") or ""))
    except SessionKeyError:
        _LOGGER.warning("Transcript %s names no session key; left out of the index", path)
        return None
    mtime = path.stat().st_mtime_ns // 1_000_000
    started = parse_timestamp(head.get("timestamp")) or mtime
    record: dict[str, Any] = {
        "sessionId": str(head.get("id") or path.stem),
        "updatedAt": mtime,
        "sessionStartedAt": started,
        "lastInteractionAt": started,
        **key_fields(parsed),
        **dict.fromkeys(COUNTERS, 0),
    }
    for entry in records[1:]:
        kind = entry.get("type")
        if kind == "compaction":
            record["compactionCount"] += 1
        if kind != "message" or not isinstance(entry.get("message"), dict):
            continue
        record["messageCount"] += 1
        record["lastInteractionAt"] = parse_timestamp(entry.get("timestamp")) or mtime
        usage = entry["message"].get("usage")
        if isinstance(usage, dict):
            for source, target in (
                ("input", "inputTokens"),
                ("output", "outputTokens"),
                ("cacheRead", "cacheReadTokens"),
                ("cacheWrite", "cacheWriteTokens"),
                ("totalTokens", "totalTokens"),
            ):
                value = usage.get(source)
                if isinstance(value, int):
                    record[target] += value
    return str(parsed), record


def key_fields(parsed: SessionKey) -> dict[str, str]:
    """What the key itself says about a session: `chatType` and `channel`."""
    fields: dict[str, str] = {}
    if parsed.chat_type:
        fields["chatType"] = parsed.chat_type
    if parsed.channel:
        fields["channel"] = parsed.channel
    return fields


def rebuild_index(directory: Path) -> Index:
    """An index made from the transcripts' headers and entries (labels and other patched
    fields cannot be recovered). For a key with several transcripts, the newest wins."""
    index: Index = {}
    for path in sorted(directory.glob("*.jsonl")):
        found = _rebuilt_record(path)
        if found is None:
            continue
        key, record = found
        if key not in index or record["sessionStartedAt"] >= index[key]["sessionStartedAt"]:
            index[key] = record
    return index


class AgentSessions:
    """`<state_dir>/agents/<agentId>/sessions/`: the index and the transcripts of one agent.

    Writers call `load` and `save` inside `locked()`, which holds a thread lock and a file
    lock (other processes: the gateway and the CLI). Readers need no file lock: the index is
    replaced atomically and transcripts only grow.
    """

    def __init__(
        self, directory: Path, agent_id: str, *, clock: Clock, lock_timeout_s: float
    ) -> None:
        self.directory = directory
        self._clock = clock
        self.agent_id = agent_id
        self.index_path = directory / INDEX_NAME
        self._thread_lock = threading.RLock()
        self._lock_timeout_s = lock_timeout_s
        self._file_lock: FileLock | None = None
        self._raw: bytes | None = None
        self._index: Index = {}
        self._tails: dict[str, TranscriptTail] = {}
        self._swept = False

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access to this agent's files, across threads and processes (reentrant)."""
        with self._thread_lock:
            private_dir(self.directory)
            if not self._swept:
                self._remove_stale_temp_files()
                self._swept = True
            file_lock = self._cross_process_lock()
            try:
                # flock is polled; a short interval keeps a contended append fast.
                file_lock.acquire(poll_interval=0.005)
            except TimeoutError:  # filelock.Timeout is one
                raise SessionStoreBusyError(
                    f"the sessions of agent {self.agent_id!r} are locked by another process "
                    f"({file_lock.lock_file}); try again"
                ) from None
            try:
                yield
            finally:
                file_lock.release()

    def _cross_process_lock(self) -> FileLock:
        # filelock (2 MiB of modules) loads with the first write, not with the gateway.
        if self._file_lock is None:
            from filelock import FileLock

            self._file_lock = FileLock(
                str(self.directory / f"{INDEX_NAME}.lock"),
                timeout=self._lock_timeout_s,
                thread_local=False,
            )
        return self._file_lock

    def _remove_stale_temp_files(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        for stale in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()

    # ------------------------------------------------------------------ the index

    def load(self) -> Index:
        """The index as on disk now. The dict is shared: mutate it only inside `locked()`
        (and then `save` it); readers use `snapshot()`."""
        with self._thread_lock:
            try:
                data = self.index_path.read_bytes()
            except FileNotFoundError:
                self._raw, self._index = None, {}
                return self._index
            # Comparing bytes (cheap next to parsing) rather than stat() fields, which can
            # repeat when another process rewrites the file twice within a clock tick.
            if data == self._raw:
                return self._index
            index = _decode_index(data, self.index_path)
            if index is None:
                return self._recover()
            self._raw, self._index = data, index
            return index

    def snapshot(self) -> Index:
        """A copy of the index, safe to read while others write (records are replaced on
        change, never edited in place, so a shallow copy suffices)."""
        with self._thread_lock:
            return dict(self.load())

    def save(self, index: Index) -> None:
        """Write the index atomically (temp file, fsync, rename). Inside `locked()` only."""
        data = msgspec.json.format(msgspec.json.encode(index), indent=2)
        try:
            atomic_write_bytes(self.index_path, data)
        except BaseException:
            self._raw = None  # the cache may hold changes that never reached the disk
            raise
        self._raw, self._index = data, index

    def _recover(self) -> Index:
        with self.locked():
            try:
                data = self.index_path.read_bytes()
            except FileNotFoundError:
                data = b"{}"
            index = _decode_index(data, self.index_path)
            if index is None:  # still corrupt now that no one else can be writing it
                aside = unused_name(
                    self.index_path.with_name(
                        f"{INDEX_NAME}.corrupt.{file_stamp(self._clock.now_ms())}"
                    )
                )
                os.replace(self.index_path, aside)
                index = rebuild_index(self.directory)
                _LOGGER.error(
                    "The session index %s was corrupt: moved it to %s and rebuilt %d "
                    "session(s) from the transcripts (labels and overrides are lost)",
                    self.index_path,
                    aside.name,
                    len(index),
                )
                self.save(index)
            else:
                self._raw, self._index = data, index
            return index

    # ------------------------------------------------------------------ transcripts

    def transcript_path(self, session_id: str) -> Path:
        return self.directory / f"{session_id}.jsonl"

    def create_transcript(self, session_id: str, key: str, now_ms: int, cwd: str | None) -> None:
        """Write a new transcript's header line, atomically so that a crash leaves the file
        whole or absent. Inside `locked()` only."""
        path = self.transcript_path(session_id)
        if not path.exists():
            atomic_write_bytes(path, encode_line(header(session_id, key, now_ms, cwd)))

    def header_of(self, session_id: str) -> dict[str, Any] | None:
        """The transcript's header line, or None when there is no readable one."""
        try:
            with self.transcript_path(session_id).open("rb") as fh:
                first = fh.readline()
        except FileNotFoundError:
            return None
        record = decode_line(first) if first.endswith(b"\n") else None
        return record if record is not None and record.get("type") == "session" else None

    def last_entry_id(self, session_id: str) -> str | None:
        """The id of the transcript's last entry (the next entry's parent). Inside `locked()`."""
        path = self.transcript_path(session_id)
        tail = scan_tail(path, self._tails.get(path.name))
        if tail is None:
            self._tails.pop(path.name, None)
            return None
        self._tails[path.name] = tail
        return tail.last_id

    def remember_tail(self, session_id: str, stat: os.stat_result, last_id: str | None) -> None:
        """Record where our own append left the transcript, so the next one need not read it."""
        self._tails[f"{session_id}.jsonl"] = TranscriptTail(stat.st_ino, stat.st_size, last_id)

    def archive_transcript(self, session_id: str, reason: str, now_ms: int) -> Path | None:
        """Rename the transcript to `<sessionId>.jsonl.<reason>.<timestamp>` (kept, never
        deleted); None when there was none. Inside `locked()` only."""
        path = self.transcript_path(session_id)
        self._tails.pop(path.name, None)
        if not path.exists():
            return None
        target = unused_name(path.with_name(f"{path.name}.{reason}.{file_stamp(now_ms)}"))
        os.replace(path, target)
        fsync_dir(self.directory)
        return target

    def delete_transcript(self, session_id: str) -> None:
        """Remove the transcript for good (only when explicitly asked). Inside `locked()`."""
        path = self.transcript_path(session_id)
        self._tails.pop(path.name, None)
        path.unlink(missing_ok=True)
