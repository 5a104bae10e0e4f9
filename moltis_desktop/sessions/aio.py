"""The session store for the event loop: each call runs in a worker thread."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from moltis_desktop.sessions.entry import SessionEntry
from moltis_desktop.sessions.store import SessionStore


class AsyncSessionStore:
    """`SessionStore` with coroutine methods of the same names and arguments.

    Every call can fsync or wait for another process's file lock, so none runs on the loop
    itself. Calls awaited one after another keep their order; concurrent calls on one
    session are serialised by the store's locks (in whatever order they get there).
    """

    def __init__(self, store: SessionStore) -> None:
        self.sync = store
        """The synchronous store (for code already off the loop)."""

    async def get_or_create(self, key: str, *, cwd: str | None = None) -> SessionEntry:
        return await asyncio.to_thread(self.sync.get_or_create, key, cwd=cwd)

    async def get_or_reset(self, key: str, *, cwd: str | None = None) -> SessionEntry:
        return await asyncio.to_thread(self.sync.get_or_reset, key, cwd=cwd)

    async def entry(self, key: str) -> SessionEntry | None:
        return await asyncio.to_thread(self.sync.entry, key)

    async def patch(self, key: str, **fields: Any) -> SessionEntry:
        return await asyncio.to_thread(lambda: self.sync.patch(key, **fields))

    async def add_usage(
        self, key: str, model: str, provider: str, usage: Mapping[str, Any]
    ) -> SessionEntry:
        return await asyncio.to_thread(self.sync.add_usage, key, model, provider, usage)

    async def append(self, key: str, entry: Mapping[str, Any]) -> str:
        return await asyncio.to_thread(self.sync.append, key, entry)

    async def append_many(
        self, key: str, entries: Sequence[Mapping[str, Any]]
    ) -> builtins.list[str]:
        return await asyncio.to_thread(self.sync.append_many, key, entries)

    async def record_compaction(
        self, key: str, summary: str, first_kept_entry_id: str | None, tokens_before: int
    ) -> str:
        return await asyncio.to_thread(
            self.sync.record_compaction, key, summary, first_kept_entry_id, tokens_before
        )

    async def transcript(self, key: str) -> builtins.list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.transcript, key)

    async def history(self, key: str, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.history, key, limit)

    async def preview(
        self, keys: Iterable[str], limit: int = 12, max_chars: int = 240
    ) -> builtins.list[dict[str, Any]]:
        keys = builtins.list(keys)
        return await asyncio.to_thread(self.sync.preview, keys, limit, max_chars)

    async def reset(self, key: str) -> str:
        return await asyncio.to_thread(self.sync.reset, key)

    async def delete(self, key: str, *, delete_transcript: bool = False) -> bool:
        return await asyncio.to_thread(self.sync.delete, key, delete_transcript=delete_transcript)

    async def list(
        self,
        agent_id: str | None = None,
        *,
        limit: int | None = None,
        active_minutes: float | None = None,
        search: str | None = None,
        label: str | None = None,
    ) -> builtins.list[SessionEntry]:
        return await asyncio.to_thread(
            lambda: self.sync.list(
                agent_id, limit=limit, active_minutes=active_minutes, search=search, label=label
            )
        )
