"""Event-loop health: how late timers fire and how busy the process is."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import Any

_WINDOW = 60
"""Samples kept (one a second: the last minute)."""
_DEGRADED_DELAY_MS = 200.0
_DEGRADED_UTILIZATION = 0.9
_CORES = os.cpu_count() or 1


class EventLoopMonitor:
    """Samples the loop's timer lag and the process's CPU use once a second.

    Fills the `eventLoop` block of `health` and `status`, in the shape OpenClaw reports it.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._delays: deque[float] = deque(maxlen=_WINDOW)
        self._last_wall = time.monotonic()
        self._last_cpu = time.process_time()
        self._utilization = 0.0
        self._degraded_since_ms: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._expected = loop.time() + self.interval_s
        self._handle = loop.call_at(self._expected, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._delays.append(max(0.0, (now - self._expected) * 1000.0))
        wall, cpu = time.monotonic(), time.process_time()
        if wall > self._last_wall:
            self._utilization = (cpu - self._last_cpu) / (wall - self._last_wall)
        self._last_wall, self._last_cpu = wall, cpu
        self._expected = now + self.interval_s
        self._handle = loop.call_at(self._expected, self._tick)

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """The `eventLoop` block."""
        delays = sorted(self._delays) or [0.0]
        p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
        reasons = []
        if p99 > _DEGRADED_DELAY_MS:
            reasons.append("event_loop_delay")
        if self._utilization > _DEGRADED_UTILIZATION:
            reasons.append("event_loop_utilization")
        degraded = bool(reasons)
        if degraded and self._degraded_since_ms is None:
            self._degraded_since_ms = now_ms
        elif not degraded:
            self._degraded_since_ms = None
        return {
            "degraded": degraded,
            "degradedSinceMs": self._degraded_since_ms,
            "reasons": reasons,
            "intervalMs": self.interval_s * 1000.0,
            "delayP99Ms": round(p99, 1),
            "delayMaxMs": round(delays[-1], 1),
            "utilization": round(min(self._utilization, 1.0), 3),
            "cpuCoreRatio": round(self._utilization / _CORES, 3),
        }
