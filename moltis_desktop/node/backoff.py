"""Jittered exponential backoff for the node host's reconnects."""

from __future__ import annotations

import logging
import random

_LOGGER = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 30.0


class Backoff:
    """Jittered exponential delays: 1 s, 2 s, 4 s ... up to the cap, each cut by up to a half
    at random so that nodes restarted together do not come back in step."""

    def __init__(self, start_s: float = BACKOFF_START_S, cap_s: float = BACKOFF_CAP_S) -> None:
        self.start_s = start_s
        self.cap_s = cap_s
        self.attempt = 0

    def next(self, cap_s: float | None = None) -> float:
        cap = self.cap_s if cap_s is None else min(cap_s, self.cap_s)
        delay = min(cap, self.start_s * 2.0 ** min(self.attempt, 16))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self.attempt = 0


__all__ = ["BACKOFF_CAP_S", "BACKOFF_START_S", "Backoff"]
