"""Shared-secret authentication of connecting clients, and throttling of failed attempts."""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.logging import security_event
from moltis_desktop.pairing.identity import SIGNATURE_MAX_SKEW_MS


def is_loopback(host: str | None) -> bool:
    """Whether `host` (an IP address, possibly IPv4-mapped IPv6) is a loopback address."""
    if not host:
        return False
    return _is_loopback(host)


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@dataclass(frozen=True)
class SharedSecret:
    """What clients must present: a token, a password, or nothing (mode `none`)."""

    mode: str
    """`token`, `password` or `none`."""
    token: str | None = None
    password: str | None = None

    def check(self, given: str | None) -> str | None:
        """None when `given` matches; else the reason (`token_missing`, `token_mismatch`,
        `password_missing`, `password_mismatch`, `not_configured`)."""
        if self.mode == "none":
            return None
        if self.mode == "password":
            return _compare(self.password, given, "password")
        return _compare(self.token, given, "token")


def _compare(expected: str | None, given: str | None, kind: str) -> str | None:
    if not expected:
        return "not_configured"
    if not given:
        return f"{kind}_missing"
    # Constant time, so that the comparison does not leak how much of a guess was right.
    if hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8")):
        return None
    return f"{kind}_mismatch"


EXEMPT_LOCKOUT_S = 5.0
"""How long an exempt (loopback) key is locked after `max_failures` within the window."""


class FailedAuthThrottle:
    """Failed connect attempts per client key (an IP, or a browser origin).

    After `max_failures` within `window_s` the key is locked out for `lockout_s`. Exempt
    keys (loopback, by default) are not locked out for long: each failure answers later
    (250 ms, doubling, at most 5 s), which makes guessing slow without locking out the
    owner's own tools (OpenClaw uses the same numbers), and `max_failures` within the
    window lock them for `EXEMPT_LOCKOUT_S` only. That short lock is what bounds guesses
    sent in parallel, which a delay alone does not.
    """

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
        exempt_loopback: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        max_tracked: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.exempt_loopback = exempt_loopback
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def _exempt(self, key: str) -> bool:
        return self.exempt_loopback and is_loopback(key)

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self._max_tracked:
                # Bounded memory under a spray of addresses: forget the oldest-seen key.
                self._failures.pop(next(iter(self._failures)))
            times = self._failures[key] = deque(maxlen=max(self.max_failures, 6) + 1)
        cutoff = self._clock.monotonic() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def retry_after_ms(self, key: str) -> int | None:
        """Milliseconds until `key` may try again, or None when it may try now."""
        until = self._locked_until.get(key)
        if until is None:
            return None
        left = until - self._clock.monotonic()
        if left <= 0:
            del self._locked_until[key]
            return None
        return max(1, int(left * 1000))

    def record_failure(self, key: str) -> float:
        """Count one failed attempt; returns how long to wait before answering, in seconds."""
        times = self._recent(key)
        times.append(self._clock.monotonic())
        exempt = self._exempt(key)
        count = len(times)
        if count >= self.max_failures:
            lockout = min(EXEMPT_LOCKOUT_S, self.lockout_s) if exempt else self.lockout_s
            self._locked_until[key] = self._clock.monotonic() + lockout
            security_event("auth.locked_out", key=key, seconds=lockout)
            times.clear()
        if exempt:
            return min(0.25 * 2.0 ** (min(count, 6) - 1), 5.0)
        return 0.0

    def record_success(self, key: str) -> None:
        """Forget `key`'s failures after a good login."""
        self._failures.pop(key, None)
        self._locked_until.pop(key, None)


class PairingRequestLimiter:
    """New pairing requests allowed per client IP per minute (a sliding window), so that a
    device on the network cannot flood the owner with requests."""

    def __init__(self, per_minute: Callable[[], int], clock: Clock = SYSTEM_CLOCK) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock.monotonic()
        recent = self._seen.setdefault(key, deque())
        while recent and now - recent[0] > 60.0:
            recent.popleft()
        if len(recent) >= self._per_minute():
            return False
        recent.append(now)
        if len(self._seen) > 4096:  # forget idle addresses
            for stale in [k for k, v in self._seen.items() if not v]:
                del self._seen[stale]
        return True


class LegacyReplayGuard:
    """Legacy v1 device signatures (no nonce; loopback clients only) seen within the
    signature's validity window. A v1 signature does not name the connection it was made
    for, so without this a captured one could be replayed from this machine for up to
    `SIGNATURE_MAX_SKEW_MS`; each is accepted once."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._seen: dict[str, int] = {}
        self._max = max_entries

    def first_use(self, signature: str, now_ms: int) -> bool:
        if len(self._seen) >= self._max or signature in self._seen:
            self._seen = {s: t for s, t in self._seen.items() if t > now_ms}
        if signature in self._seen:
            return False
        while len(self._seen) >= self._max:
            self._seen.pop(next(iter(self._seen)))
        self._seen[signature] = now_ms + 2 * SIGNATURE_MAX_SKEW_MS
        return True
