"""The wake and send chimes: two short tones made with numpy (no sound files to ship)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import Pcm

CHIME_RATE = 22050


def chime(kind: str, volume: float = 0.25) -> Pcm:
    """`wake`: a rising two-note chime; `send`: a falling one. About 0.2 s."""
    import numpy as np

    notes = (660.0, 880.0) if kind == "wake" else (880.0, 587.0)
    parts = []
    for freq in notes:
        t = np.arange(int(0.09 * CHIME_RATE)) / CHIME_RATE
        envelope = np.minimum(1.0, t / 0.005) * np.exp(-t * 18)
        parts.append(np.sin(2 * np.pi * freq * t) * envelope)
    wave = np.concatenate(parts) * max(0.0, min(1.0, volume))
    return (wave * 32767).astype(np.int16)
