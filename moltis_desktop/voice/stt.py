"""Transcription with faster-whisper (CTranslate2, int8 on the CPU), off the event loop.

As in wyoming-faster-whisper: the engine sits behind one small class, models load once per
(path, compute type) under a lock, and every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.voice.audio import SAMPLE_RATE, float32, read_wav_16k
from moltis_desktop.voice.errors import ModelMissingError, VoiceError

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import Pcm

_LOGGER = logging.getLogger(__name__)

MAX_AUDIO_S = 600
"""Longest audio transcribed in one call (a voice note), in seconds."""


@dataclass(frozen=True)
class Transcript:
    """What was said."""

    text: str
    language: str
    duration_s: float
    """Length of the audio, in seconds."""
    elapsed_s: float
    """Time taken to transcribe it, in seconds."""


class Transcriber:
    """Whisper on this machine. `model_path` is a CTranslate2 model directory."""

    def __init__(
        self,
        model_path: Path,
        *,
        compute_type: str = "int8",
        language: str = "",
        beam_size: int = 1,
        threads: int = 0,
    ) -> None:
        if not (model_path / "model.bin").is_file():
            raise ModelMissingError(
                f"{model_path} is not a faster-whisper model (no model.bin); run `moltis "
                "models voice download whisper/tiny.en` or set voice.stt.model"
            )
        self.model_path = model_path
        self.compute_type = compute_type
        self.language = language
        self.beam_size = beam_size
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.english_only = model_path.name.endswith(".en") or _is_english_only(model_path)
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (it is otherwise loaded by the first transcription)."""
        with self._lock:
            if self._model is not None:
                return
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise ModelMissingError(
                    "transcription needs faster-whisper: pip install 'moltis-desktop[voice]'"
                ) from None
            started = time.perf_counter()
            self._model = WhisperModel(
                str(self.model_path),
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.threads,
                local_files_only=True,
            )
            _LOGGER.info(
                "whisper model %s loaded in %.2f s (%s)",
                self.model_path.name,
                time.perf_counter() - started,
                self.compute_type,
            )

    def transcribe_pcm(self, pcm: Pcm, *, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono samples (blocking: call it from a thread)."""
        if len(pcm) > MAX_AUDIO_S * SAMPLE_RATE:
            raise VoiceError(
                f"the audio is {len(pcm) // SAMPLE_RATE} s long; at most {MAX_AUDIO_S} s "
                "can be transcribed at once"
            )
        self.load()
        lang = "en" if self.english_only else (language or self.language or None)
        started = time.perf_counter()
        with self._lock:  # CTranslate2 models are not safe to share across concurrent calls
            segments, info = self._model.transcribe(
                float32(pcm),
                language=lang,
                beam_size=self.beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(
            text=text,
            language=str(info.language),
            duration_s=len(pcm) / SAMPLE_RATE,
            elapsed_s=time.perf_counter() - started,
        )

    def transcribe_file(self, data: bytes | Path, *, language: str | None = None) -> Transcript:
        """Transcribe an audio file of any format PyAV reads (WAV, Ogg/Opus, WebM, MP3, M4A)."""
        return self.transcribe_pcm(decode_audio(data), language=language)

    async def transcribe(self, pcm: Pcm, *, language: str | None = None) -> Transcript:
        """Transcribe without blocking the event loop."""
        return await asyncio.to_thread(self.transcribe_pcm, pcm, language=language)


def _is_english_only(model_path: Path) -> bool:
    try:
        import json

        config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # English-only Whisper models have no language tokens (lang_ids is empty or absent).
    return not config.get("lang_ids")


def decode_audio(data: bytes | Path) -> Pcm:
    """Any audio file as 16 kHz mono samples. WAV is read directly; other formats go
    through PyAV (faster-whisper's decoder)."""
    import io

    import numpy as np

    raw = data.read_bytes() if isinstance(data, Path) else data
    if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        return read_wav_16k(raw)
    try:
        from faster_whisper.audio import decode_audio as fw_decode
    except ImportError:
        raise VoiceError("only WAV audio can be read without faster-whisper") from None
    try:
        audio = fw_decode(io.BytesIO(raw), sampling_rate=SAMPLE_RATE)
    except Exception as exc:
        raise VoiceError(
            f"cannot decode the audio ({type(exc).__name__}: {exc}); send WAV, Ogg/Opus, "
            "WebM, MP3 or M4A"
        ) from None
    pcm: Pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    return pcm
