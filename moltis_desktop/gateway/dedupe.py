"""Idempotency-key dedupe: a retried side-effecting request gets the first one's answer."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock

DEDUPE_TTL_S = 300.0
"""How long an answer is remembered, in seconds (OpenClaw's DEDUPE_TTL_MS)."""
DEDUPE_MAX = 1000
"""Most answers remembered at once; the oldest go first (OpenClaw's DEDUPE_MAX)."""


@dataclass(slots=True)
class _Entry:
    expires: float
    future: asyncio.Future[bytes]


class IdempotencyCache:
    """Answers keyed by `(method, idempotencyKey)`.

    An answer is the first request's encoded response frame (`payload` or `error`); the
    duplicate gets its content under its own request id. A duplicate
    that arrives while the first is still running waits for it.
    """

    def __init__(
        self,
        *,
        ttl_s: float = DEDUPE_TTL_S,
        max_entries: int = DEDUPE_MAX,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def _expire(self) -> None:
        now = self._clock.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now and len(self._entries) <= self._max:
                break
            del self._entries[key]

    def claim(self, method: str, key: str) -> asyncio.Future[bytes] | None:
        """None when this is the first request with `key` (the caller runs it and then
        calls `resolve`); otherwise the future of the first request's answer."""
        self._expire()
        entry = self._entries.get((method, key))
        if entry is not None:
            return entry.future
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._entries[(method, key)] = _Entry(self._clock.monotonic() + self._ttl, future)
        self._expire()
        return None

    def resolve(self, method: str, key: str, encoded: bytes) -> None:
        """Record the first request's answer."""
        entry = self._entries.get((method, key))
        if entry is not None and not entry.future.done():
            entry.future.set_result(encoded)

    def forget(self, method: str, key: str) -> None:
        """Drop a claim whose request crashed, so a retry runs again."""
        entry = self._entries.pop((method, key), None)
        if entry is not None and not entry.future.done():
            entry.future.cancel()
