"""Voice activity detection: Silero VAD (the ONNX model faster-whisper ships), streamed.

faster-whisper runs Silero over a whole file; we need it chunk by chunk (wake-word gating,
end of an utterance, barge-in), so this keeps the model's recurrent state between calls.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.voice.audio import float32
from moltis_desktop.voice.errors import ModelMissingError

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import Pcm

_LOGGER = logging.getLogger(__name__)

WINDOW = 512
"""Samples per VAD step at 16 kHz (32 ms)."""
_CONTEXT = 64

_SESSIONS: dict[str, Any] = {}
_SESSION_LOCK = threading.Lock()


def _session() -> Any:
    """One ONNX session for the process (it is stateless; the state lives in `Vad`)."""
    with _SESSION_LOCK:
        if "silero" not in _SESSIONS:
            try:
                import onnxruntime
                from faster_whisper.vad import get_assets_path
            except ImportError:
                raise ModelMissingError(
                    "voice activity detection needs faster-whisper and onnxruntime: "
                    "pip install 'moltis-desktop[voice]'"
                ) from None
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 4
            path = Path(get_assets_path()) / "silero_vad_v6.onnx"
            _SESSIONS["silero"] = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=opts
            )
        return _SESSIONS["silero"]


class Vad:
    """Speech probability per 32 ms window, with the model's state carried across calls."""

    def __init__(self, threshold: float = 0.5) -> None:
        import numpy as np

        self.threshold = threshold
        self._session = _session()
        self._np = np
        self.reset()

    def reset(self) -> None:
        np = self._np
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def probabilities(self, pcm: Pcm) -> list[float]:
        """Speech probabilities of the complete 512-sample windows in `pcm` (plus what was
        left over from the previous call)."""
        np = self._np
        audio = np.concatenate([self._pending, float32(pcm)])
        probs = []
        n = len(audio) // WINDOW * WINDOW
        for i in range(0, n, WINDOW):
            window = audio[i : i + WINDOW]
            batch = np.concatenate([self._context, window])[None, :]
            out, self._h, self._c = self._session.run(
                None, {"input": batch, "h": self._h, "c": self._c}
            )
            self._context = window[-_CONTEXT:]
            probs.append(float(np.asarray(out).ravel()[0]))
        self._pending = audio[n:]
        return probs

    def is_speech(self, pcm: Pcm) -> bool:
        """Whether any window of `pcm` is speech."""
        return any(p >= self.threshold for p in self.probabilities(pcm))
