"""The session store: per-agent `sessions.json` indexes and `<sessionId>.jsonl` transcripts."""

from __future__ import annotations

import builtins
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec

from moltis_desktop.config.settings import SessionSettings
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.keys import ServiceKey
from moltis_desktop.core.paths import sessions_dir
from moltis_desktop.sessions.entry import (
    COUNTERS,
    RESET_FIELDS,
    SessionEntry,
    SessionError,
)
from moltis_desktop.sessions.index import AgentSessions, Index, key_fields
from moltis_desktop.sessions.jsonl import append_lines, encode_line, read_records, read_tail_records
from moltis_desktop.sessions.keys import (
    DEFAULT_AGENT_ID,
    SessionKey,
    SessionKeyError,
    normalize_agent_id,
    parse_session_key,
)
from moltis_desktop.sessions.policy import needs_reset
from moltis_desktop.sessions.transcript import (
    history_window,
    preview_items,
    stamp_entry,
    validate_entry,
)
from moltis_desktop.sessions.usage import UsageLedger, normalize_usage

_LOGGER = logging.getLogger(__name__)

PREVIEW_WINDOW_BYTES = 256 * 1024
"""How much of a transcript's end a preview reads first (the whole file only when that holds
too few messages)."""
_USAGE_COUNTERS = (
    ("input", "inputTokens"),
    ("output", "outputTokens"),
    ("cacheRead", "cacheReadTokens"),
    ("cacheWrite", "cacheWriteTokens"),
    ("totalTokens", "totalTokens"),
)

Update = Callable[[dict[str, Any]], None]
SessionObserver = Callable[[str, str], None]
"""Called with (canonical key, reason: `patch`, `reset` or `delete`) after an entry
changed, on the thread that changed it; must not block or raise."""


def _entry(key: str, agent_id: str, record: Mapping[str, Any]) -> SessionEntry:
    return SessionEntry(key, agent_id, MappingProxyType(dict(record)))


def _started(session_id: str, now: int) -> dict[str, Any]:
    """The fields of a session (re)started at `now`."""
    return {
        "sessionId": session_id,
        "updatedAt": now,
        "sessionStartedAt": now,
        "lastInteractionAt": now,
    }


class SessionStore:
    """Sessions of every agent under `<state_dir>/agents/<agentId>/sessions/`.

    Keys may be given in any form `parse_session_key` accepts; entries carry the canonical
    one. Every method is synchronous and short (a line append, an index rewrite, a file
    read); the agent loop runs them off the event loop (`asyncio.to_thread`). Safe to share
    between threads, and between processes (the gateway and the CLI) through a file lock
    per agent.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        settings: SessionSettings | None = None,
        default_agent: str = DEFAULT_AGENT_ID,
        clock: Clock = SYSTEM_CLOCK,
        tz: tzinfo | None = None,
        usage: UsageLedger | None = None,
        lock_timeout_s: float = 30.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.settings = settings or SessionSettings()
        self.default_agent = default_agent.lower()
        self.tz = tz
        """Time zone of the daily reset; None means the system's local time."""
        self.usage = usage or UsageLedger(
            self.state_dir / "usage", clock=clock, lock_timeout_s=lock_timeout_s
        )
        self._clock = clock
        self._lock_timeout_s = lock_timeout_s
        self._agents: dict[str, AgentSessions] = {}
        self._agents_lock = threading.Lock()
        self._observers: builtins.list[SessionObserver] = []

    # ------------------------------------------------------------------ observers

    def subscribe(self, observer: SessionObserver) -> Callable[[], None]:
        """Tell `observer` of every entry patched, reset or deleted (whoever did it: a
        method, a typed `/reset`, a directive); returns the unsubscriber."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def _announce(self, key: str, reason: str) -> None:
        for observer in tuple(self._observers):
            try:
                observer(key, reason)
            except Exception:  # an observer's bug must not undo a saved change
                _LOGGER.exception("a session observer failed on %s %s", reason, key)

    def update_settings(self, settings: SessionSettings, default_agent: str | None = None) -> None:
        """Apply reloaded config (main key, reset policy, default agent)."""
        self.settings = settings
        if default_agent is not None:
            self.default_agent = default_agent.lower()

    # ------------------------------------------------------------------ keys and dirs

    def parse(self, key: str) -> SessionKey:
        """`key` parsed with this store's default agent and main key."""
        return parse_session_key(
            key, default_agent=self.default_agent, main_key=self.settings.main_key
        )

    def _resolve(self, key: str) -> tuple[str, AgentSessions, SessionKey]:
        parsed = self.parse(key)
        return str(parsed), self._agent(parsed.agent_id or self.default_agent), parsed

    def _agent(self, agent_id: str) -> AgentSessions:
        with self._agents_lock:
            agent = self._agents.get(agent_id)
            if agent is None:
                directory = sessions_dir(self.state_dir, agent_id)
                agent = AgentSessions(
                    directory, agent_id, clock=self._clock, lock_timeout_s=self._lock_timeout_s
                )
                self._agents[agent_id] = agent
            return agent

    def sessions_dir(self, agent_id: str) -> Path:
        """`<state_dir>/agents/<agentId>/sessions`."""
        return self._agent(normalize_agent_id(agent_id)).directory

    def transcript_path(self, key: str) -> Path | None:
        """The current transcript file of `key`'s session; None when there is no session."""
        canonical, agent, _ = self._resolve(key)
        record = agent.snapshot().get(canonical)
        return agent.transcript_path(record["sessionId"]) if record else None

    # ------------------------------------------------------------------ entries

    def _create(
        self, agent: AgentSessions, index: Index, key: str, parsed: SessionKey, cwd: str | None
    ) -> dict[str, Any]:
        # Inside agent.locked(); the caller saves the index.
        now = self._clock.now_ms()
        session_id = str(uuid.uuid4())
        record = {**_started(session_id, now), **key_fields(parsed), **dict.fromkeys(COUNTERS, 0)}
        # Header first: an index entry never points at a transcript that was never begun.
        agent.create_transcript(session_id, key, now, cwd)
        index[key] = record
        return record

    def _existing_or_new(
        self, agent: AgentSessions, index: Index, key: str, parsed: SessionKey
    ) -> dict[str, Any]:
        # Inside agent.locked(): the record of `key`, created when missing.
        current = index.get(key)
        return current if current is not None else self._create(agent, index, key, parsed, None)

    def get_or_create(self, key: str, *, cwd: str | None = None) -> SessionEntry:
        """The session's entry, creating it (new sessionId, transcript header) if needed."""
        canonical, agent, parsed = self._resolve(key)
        record = agent.snapshot().get(canonical)
        if record is None:
            with agent.locked():
                index = agent.load()
                record = index.get(canonical)
                if record is None:
                    record = self._create(agent, index, canonical, parsed, cwd)
                    agent.save(index)
        return _entry(canonical, agent.agent_id, record)

    def entry(self, key: str) -> SessionEntry | None:
        """The session's entry, or None when there is no such session."""
        canonical, agent, _ = self._resolve(key)
        record = agent.snapshot().get(canonical)
        return _entry(canonical, agent.agent_id, record) if record is not None else None

    def _update(self, key: str, update: Update) -> tuple[SessionEntry, AgentSessions]:
        # Read-modify-write of one index record under the lock. The record is replaced by
        # an updated copy, never edited in place (readers hold shallow snapshots).
        canonical, agent, parsed = self._resolve(key)
        with agent.locked():
            index = agent.load()
            record = dict(self._existing_or_new(agent, index, canonical, parsed))
            update(record)
            record["updatedAt"] = max(self._clock.now_ms(), int(record.get("updatedAt") or 0))
            index[canonical] = record
            agent.save(index)
        return _entry(canonical, agent.agent_id, record), agent

    def patch(self, key: str, **fields: Any) -> SessionEntry:
        """Set fields (camelCase, any JSON value) on the session's entry, creating the
        session if needed; a None value removes the field. `sessionId` cannot be patched
        (use `reset`)."""
        if "sessionId" in fields:
            raise SessionError("sessionId cannot be patched; reset the session for a new one")
        try:
            msgspec.json.encode(fields)
        except (TypeError, msgspec.EncodeError) as exc:
            raise SessionError(f"session fields must be plain JSON data: {exc}") from None

        def update(record: dict[str, Any]) -> None:
            for name, value in fields.items():
                if value is None:
                    record.pop(name, None)
                else:
                    record[name] = value

        entry = self._update(key, update)[0]
        self._announce(entry.key, "patch")
        return entry

    def add_usage(
        self, key: str, model: str, provider: str, usage: Mapping[str, Any]
    ) -> SessionEntry:
        """Count one model call's usage (`{input, output, cacheRead, cacheWrite,
        totalTokens?}`) on the session and append it to the usage ledger.

        The four counters and `totalTokens` accumulate; `contextTokens` becomes this call's
        context (prompt, cache and reply), what the next call starts from; `model` and
        `modelProvider` record the model used.
        """
        counts = normalize_usage(usage)

        def update(record: dict[str, Any]) -> None:
            for source, target in _USAGE_COUNTERS:
                record[target] = int(record.get(target) or 0) + counts[source]
            record["contextTokens"] = (
                counts["input"] + counts["cacheRead"] + counts["cacheWrite"] + counts["output"]
            )
            record["model"] = model
            record["modelProvider"] = provider

        entry, agent = self._update(key, update)
        self.usage.record(
            agent_id=agent.agent_id,
            session_key=entry.key,
            provider=provider,
            model=model,
            usage=counts,
            ts_ms=entry.updated_at,
        )
        return entry

    # ------------------------------------------------------------------ transcripts

    def append(self, key: str, entry: Mapping[str, Any]) -> str:
        """Append one transcript entry (`message`, `compaction`, `custom`, …), creating the
        session if needed; returns its id. `id`, `parentId` (the previous entry) and
        `timestamp` are filled in unless given. The line is fsynced before the index
        (counters, `updatedAt`) is updated."""
        return self.append_many(key, [entry])[0]

    def append_many(self, key: str, entries: Sequence[Mapping[str, Any]]) -> builtins.list[str]:
        """`append` for several entries at once (one fsync, one index write); returns their
        ids in order."""
        return self._append(key, [validate_entry(e) for e in entries], None)

    def _append(
        self, key: str, entries: builtins.list[dict[str, Any]], extra: Update | None
    ) -> builtins.list[str]:
        canonical, agent, parsed = self._resolve(key)
        if not entries:
            return []
        with agent.locked():
            index = agent.load()
            current = self._existing_or_new(agent, index, canonical, parsed)
            session_id = current["sessionId"]
            now = self._clock.now_ms()
            # A transcript removed behind our back starts over with a header.
            agent.create_transcript(session_id, canonical, now, None)
            parent = agent.last_entry_id(session_id)
            stamped: builtins.list[dict[str, Any]] = []
            for entry in entries:
                stamped.append(stamp_entry(entry, parent, now))
                parent = stamped[-1]["id"]
            stat = append_lines(
                agent.transcript_path(session_id), [encode_line(e) for e in stamped]
            )
            agent.remember_tail(session_id, stat, parent)
            record = dict(current)
            messages = sum(1 for e in stamped if e["type"] == "message")
            record["messageCount"] = int(record.get("messageCount") or 0) + messages
            if messages:
                record["lastInteractionAt"] = now
            record["updatedAt"] = max(now, int(record.get("updatedAt") or 0))
            if extra is not None:
                extra(record)
            index[canonical] = record
            agent.save(index)
        return [e["id"] for e in stamped]

    def record_compaction(
        self, key: str, summary: str, first_kept_entry_id: str | None, tokens_before: int
    ) -> str:
        """Append a compaction entry: from now on `history` is `summary` plus the entries
        from `first_kept_entry_id` on (None keeps nothing before the compaction). Returns
        its id; counts the compaction and clears `contextTokens` until the next call."""
        if first_kept_entry_id is not None:
            ids = {e.get("id") for e in self.transcript(key)[1:]}
            if first_kept_entry_id not in ids:
                raise SessionError(
                    f"entry {first_kept_entry_id!r} is not in the transcript of {key!r}"
                )
        entry = validate_entry(
            {
                "type": "compaction",
                "summary": summary,
                "firstKeptEntryId": first_kept_entry_id,
                "tokensBefore": int(tokens_before),
            }
        )

        def update(record: dict[str, Any]) -> None:
            record["compactionCount"] = int(record.get("compactionCount") or 0) + 1
            record["contextTokens"] = 0

        return self._append(key, [entry], update)[0]

    def transcript(self, key: str) -> builtins.list[dict[str, Any]]:
        """Every entry of the session's current transcript, the header line first (empty
        when there is no session). A torn last line is left out."""
        path = self.transcript_path(key)
        return read_records(path) if path is not None else []

    def history(self, key: str, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        """The entries to send to the model: after the last compaction its entry (with the
        summary) and the entries from its `firstKeptEntryId` on, otherwise all message
        entries; at most the last `limit` of them besides the summary."""
        entries = self.transcript(key)
        return history_window(entries[1:] if entries else [], limit)

    def preview(
        self, keys: Iterable[str], limit: int = 12, max_chars: int = 240
    ) -> builtins.list[dict[str, Any]]:
        """`sessions.preview`: per key `{key, status, items}` where status is `ok`,
        `empty`, `missing` or `error`, and items the last `limit` messages with text as
        `{role, text, timestamp}` cut to `max_chars`."""
        previews: builtins.list[dict[str, Any]] = []
        for key in keys:
            try:
                path = self.transcript_path(key)
                canonical = str(self.parse(key))
            except SessionKeyError as exc:
                previews.append({"key": key, "status": "error", "items": [], "error": str(exc)})
                continue
            if path is None:
                previews.append({"key": canonical, "status": "missing", "items": []})
                continue
            try:
                records, whole = read_tail_records(path, PREVIEW_WINDOW_BYTES)
                items = preview_items(records, limit, max_chars)
                if len(items) < limit and not whole:
                    items = preview_items(read_records(path), limit, max_chars)
            except OSError as exc:
                previews.append(
                    {"key": canonical, "status": "error", "items": [], "error": str(exc)}
                )
                continue
            status = "ok" if items else "empty"
            previews.append({"key": canonical, "status": status, "items": items})
        return previews

    # ------------------------------------------------------------------ lifecycle

    def _restart(self, agent: AgentSessions, index: Index, key: str) -> str:
        # Inside agent.locked(): a new session id for `key`, keeping its labels and
        # overrides; the old transcript is archived after the index points at the new one,
        # so a crash in between leaves an extra transcript, never a lost one.
        old = index[key]
        now = self._clock.now_ms()
        session_id = str(uuid.uuid4())
        record = {name: value for name, value in old.items() if name not in RESET_FIELDS}
        record.update({**_started(session_id, now), **dict.fromkeys(COUNTERS, 0)})
        old_header = agent.header_of(old["sessionId"]) or {}
        cwd = old_header.get("cwd")
        agent.create_transcript(session_id, key, now, cwd if isinstance(cwd, str) else None)
        index[key] = record
        agent.save(index)
        agent.archive_transcript(old["sessionId"], "reset", now)
        _LOGGER.info("Session %s reset: %s -> %s", key, old["sessionId"], session_id)
        return session_id

    def reset(self, key: str) -> str:
        """Start the session over with a new sessionId (creating it if needed) and return
        the id. The old transcript is kept as `<oldId>.jsonl.reset.<timestamp>`."""
        canonical, agent, parsed = self._resolve(key)
        with agent.locked():
            index = agent.load()
            if canonical not in index:
                record = self._create(agent, index, canonical, parsed, None)
                agent.save(index)
                session_id = str(record["sessionId"])
            else:
                session_id = self._restart(agent, index, canonical)
        self._announce(canonical, "reset")
        return session_id

    def needs_reset(self, entry: SessionEntry, now_ms: int | None = None) -> bool:
        """Whether the reset policy (`session.reset`) says `entry` should start over."""
        now = self._clock.now_ms() if now_ms is None else now_ms
        return needs_reset(entry.fields, now, self.settings.reset, tz=self.tz)

    def get_or_reset(self, key: str, *, cwd: str | None = None) -> SessionEntry:
        """`get_or_create`, first starting the session over when the reset policy says so
        (what a new inbound message does). A session without messages is not archived,
        only restamped."""
        entry = self.get_or_create(key, cwd=cwd)
        if not self.needs_reset(entry):
            return entry
        canonical, agent, _ = self._resolve(key)
        restarted = False
        with agent.locked():
            index = agent.load()
            current = index.get(canonical)
            # Checked again under the lock: another process may have reset it already.
            if current is not None and self.needs_reset(_entry(canonical, "", current)):
                if int(current.get("messageCount") or 0) == 0:
                    now = self._clock.now_ms()
                    index[canonical] = {
                        **current,
                        "sessionStartedAt": now,
                        "lastInteractionAt": now,
                        "updatedAt": now,
                    }
                    agent.save(index)
                else:
                    self._restart(agent, index, canonical)
                    restarted = True
        if restarted:
            self._announce(canonical, "reset")
        result = self.entry(canonical)
        assert result is not None
        return result

    def delete(self, key: str, *, delete_transcript: bool = False) -> bool:
        """Remove the session from the index; its transcript is archived as
        `<sessionId>.jsonl.deleted.<timestamp>`, or removed with `delete_transcript`.
        False when there was no such session."""
        canonical, agent, _ = self._resolve(key)
        with agent.locked():
            index = agent.load()
            record = index.pop(canonical, None)
            if record is None:
                return False
            agent.save(index)
            if delete_transcript:
                agent.delete_transcript(record["sessionId"])
            else:
                agent.archive_transcript(record["sessionId"], "deleted", self._clock.now_ms())
        self._announce(canonical, "delete")
        return True

    # ------------------------------------------------------------------ listing

    def agent_ids(self) -> builtins.list[str]:
        """Agents that have a session index on disk."""
        root = self.state_dir / "agents"
        if not root.is_dir():
            return []
        return sorted(d.name for d in root.iterdir() if (d / "sessions" / "sessions.json").exists())

    def list(
        self,
        agent_id: str | None = None,
        *,
        limit: int | None = None,
        active_minutes: float | None = None,
        search: str | None = None,
        label: str | None = None,
    ) -> builtins.list[SessionEntry]:
        """Sessions, most recently updated first: of one agent or all; optionally only
        those updated in the last `active_minutes`, whose key, label, display name,
        subject or session id contains `search` (any case), or with exactly `label`."""
        agents = [normalize_agent_id(agent_id)] if agent_id is not None else self.agent_ids()
        since = None
        if active_minutes is not None:
            since = self._clock.now_ms() - int(active_minutes * 60_000)
        needle = search.strip().lower() if search else ""
        found: builtins.list[SessionEntry] = []
        for agent_name in agents:
            agent = self._agent(agent_name)
            for key, record in agent.snapshot().items():
                if since is not None and int(record.get("updatedAt") or 0) < since:
                    continue
                if label is not None and record.get("label") != label:
                    continue
                if needle:
                    haystack = [key, record.get("sessionId"), record.get("label")]
                    haystack += [record.get("displayName"), record.get("subject")]
                    if not any(isinstance(h, str) and needle in h.lower() for h in haystack):
                        continue
                found.append(_entry(key, agent_name, record))
        found.sort(key=lambda e: e.updated_at, reverse=True)
        return found[:limit] if limit is not None else found


SESSIONS: ServiceKey[SessionStore] = ServiceKey("the session store")
"""For tools that read sessions (`sessions_list`, `sessions_history`)."""
