"""An injectable clock, so that timers, throttles and TTLs are testable without sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where time comes from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start_monotonic: float = 1000.0, start_ms: int = 1_800_000_000_000) -> None:
        self._mono = start_monotonic
        self._ms = start_ms

    def monotonic(self) -> float:
        return self._mono

    def now_ms(self) -> int:
        return self._ms

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`."""
        self._mono += seconds
        self._ms += int(seconds * 1000)


SYSTEM_CLOCK = SystemClock()
