"""A room where the speakers are heard by the microphone: the user's audio (a WAV) plus
whatever is playing, at `coupling` of its level, both in real time. An audio source and
sink pair for the voice loop, like a laptop without headphones or echo cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from moltis_desktop.voice.audio import CHUNK_SAMPLES, SAMPLE_RATE, resample


class EchoRoom:
    def __init__(self, user: np.ndarray, coupling: float = 0.4) -> None:
        self.user = user
        self.coupling = coupling
        self.played: list[tuple[np.ndarray, int]] = []
        self.stopped_at: list[float] = []
        self._playing: tuple[float, np.ndarray] | None = None
        self._stop = asyncio.Event()

    # ---- the speakers
    def stop(self) -> None:
        self._stop.set()

    async def play(self, pcm: np.ndarray, rate: int) -> bool:
        self._stop.clear()
        self.played.append((pcm, rate))
        loop = asyncio.get_running_loop()
        self._playing = (loop.time(), resample(pcm, rate, SAMPLE_RATE))
        try:
            await asyncio.wait_for(self._stop.wait(), len(pcm) / rate)
        except TimeoutError:
            return True
        finally:
            self._playing = None
        self.stopped_at.append(loop.time())
        return False

    # ---- the microphone
    async def chunks(self) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = CHUNK_SAMPLES / SAMPLE_RATE
        for n, i in enumerate(range(0, len(self.user), CHUNK_SAMPLES)):
            await asyncio.sleep(max(0.0, start + (n + 1) * step - loop.time()))
            chunk = self.user[i : i + CHUNK_SAMPLES].astype(np.float32)
            if len(chunk) < CHUNK_SAMPLES:
                chunk = np.pad(chunk, (0, CHUNK_SAMPLES - len(chunk)))
            if self._playing is not None:
                began, pcm = self._playing
                end = int((loop.time() - began) * SAMPLE_RATE)
                echo = pcm[max(0, end - CHUNK_SAMPLES) : max(0, end)].astype(np.float32)
                chunk[CHUNK_SAMPLES - len(echo) :] += self.coupling * echo
            yield np.clip(chunk, -32767, 32767).astype(np.int16)
