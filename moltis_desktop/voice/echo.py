"""Telling the user talking over a reply from the reply itself heard back by the microphone.

Laptop speakers leak into the laptop's microphone, and PortAudio gives us no echo
cancellation, so voice activity alone would make every reply interrupt itself. This is a
double-talk detector in the spirit of Geigel's: it knows what is being played and when,
learns how loud that comes back (the coupling: the ratio of microphone level to the
loudest recent playback, taken at its 90th percentile over the reply so far; echo alone
never goes above the true coupling, since the playback level used is a maximum), and
counts speech as the user's only when the microphone is clearly louder than that. With
headphones or a sound server's echo cancellation the coupling is learnt as ~0 and speech
counts at once (after the first ~250 ms of each reply, while the coupling is learnt).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import Pcm

WINDOW_S = 0.032
"""Level windows, in seconds (the VAD's)."""
ECHO_SPAN_S = 0.35
"""How far back playback can still be heard (output latency + the room), in seconds."""
MARGIN = 1.5
"""The user's speech must be this many times louder than the echo explains (3.5 dB)."""
LEARN_WINDOWS = 8
"""Level windows with playback needed before the coupling is trusted (~250 ms)."""
_FLOOR = 0.004
"""Playback quieter than this (of full scale) explains no echo."""


def _rms(pcm: Pcm) -> float:
    import numpy as np

    if len(pcm) == 0:
        return 0.0
    return float(np.sqrt(np.mean((pcm.astype(np.float32) / 32768.0) ** 2)))


class EchoGuard:
    """Follows playback and judges microphone windows during it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.coupling = 0.0
        """Microphone level per unit of playback level, as last learnt."""
        self._far: deque[tuple[float, float]] = deque(maxlen=4096)
        self._ratios: list[float] = []

    def reset(self) -> None:
        """A new reply: relearn the coupling from it (the last one is kept meanwhile)."""
        self._far.clear()
        self._ratios = []

    def playing(self, pcm: Pcm, rate: int, started: float | None = None) -> None:
        """`pcm` starts playing now (or at `started`): remember its level over time."""
        start = self._clock() if started is None else started
        step = max(1, int(rate * WINDOW_S))
        for i in range(0, len(pcm), step):
            self._far.append((start + i / rate, _rms(pcm[i : i + step])))

    def far_level(self, at: float) -> float:
        """The loudest playback in the `ECHO_SPAN_S` before `at`."""
        return max((lvl for t, lvl in self._far if at - ECHO_SPAN_S <= t <= at), default=0.0)

    def louder_than_echo(self, window: Pcm, at: float) -> bool:
        """Whether a microphone window ending at `at` is louder than the reply's echo can
        explain (so, when the VAD calls it speech, it is the user). Called for every window
        while a reply plays: that is how the coupling is learnt."""
        mic = _rms(window)
        far = self.far_level(at)
        if far < _FLOOR:
            return True  # nothing playing that could come back
        self._ratios.append(mic / far)
        if len(self._ratios) < LEARN_WINDOWS:
            return False  # not yet known how loud the echo is: do not guess
        ratios = sorted(self._ratios)
        self.coupling = ratios[min(len(ratios) - 1, len(ratios) * 9 // 10)]
        return mic > MARGIN * self.coupling * far and mic > _FLOOR
