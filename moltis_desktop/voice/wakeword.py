"""The wake word: openWakeWord models, run by pyopen-wakeword's numpy-only TFLite runtime.

Why pyopen-wakeword rather than `openwakeword` 0.6.0: the latter's wheel ships no models
(it would download them from GitHub) and its Linux runtime, tflite-runtime, is built for
numpy 1 and fails to load under numpy 2. pyopen-wakeword (Apache-2.0, by the Rhasspy
authors) runs the same openWakeWord models (melspectrogram → embedding → classifier), ships
the built-in ones, and needs nothing but numpy. Classifiers in ONNX form (`.onnx`, the other
format openWakeWord trains to) run on onnxruntime, which faster-whisper already brings.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.voice.audio import CHUNK_SAMPLES, SAMPLE_RATE
from moltis_desktop.voice.errors import ModelMissingError, VoiceError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from moltis_desktop.voice.audio import Pcm
    from moltis_desktop.voice.vad import Vad

_LOGGER = logging.getLogger(__name__)

BUILTIN_MODELS = {
    "hey_jarvis": "hey jarvis",
    "alexa": "alexa",
    "hey_mycroft": "hey mycroft",
    "hey_rhasspy": "hey rhasspy",
    "okay_nabu": "okay nabu",
}
"""Built-in wake-word models and the phrase each listens for."""

_WW_FEATURES = 96
_PREROLL_S = 2.0
"""With VAD gating, audio kept from before speech starts and fed to the model at onset."""
_HANGOVER_S = 1.0
"""With VAD gating, how long the model keeps running after speech stops."""


@dataclass(frozen=True)
class Detection:
    """A wake word heard."""

    model: str
    phrase: str
    score: float
    at_s: float
    """Position in the stream, in seconds (end of the chunk that fired)."""


def phrase_to_model(phrase: str) -> str | None:
    """The built-in model for a trigger phrase (`voicewake` triggers), if there is one."""
    norm = " ".join(phrase.lower().replace(",", " ").replace("_", " ").split())
    for name, text in BUILTIN_MODELS.items():
        if norm in (text, name.replace("_", " ")):
            return name
    return None


class _OnnxClassifier:
    """An openWakeWord classifier in ONNX form, streaming like pyopen-wakeword's TFLite one."""

    def __init__(self, path: Path) -> None:
        import numpy as np
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"], sess_options=opts
        )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_windows = int(inp.shape[1])
        self.np = np
        self.reset()

    def reset(self) -> None:
        self.window: deque[Any] = deque(maxlen=self.input_windows)

    def process_streaming(self, embeddings: Any) -> list[float]:
        np = self.np
        out = []
        for row in embeddings[0, 0]:
            self.window.append(row)
            if len(self.window) == self.input_windows:
                batch = np.asarray(self.window, np.float32)[None, :, :]
                (probs,) = self.session.run(None, {self.input_name: batch})
                out.append(float(np.asarray(probs).ravel()[0]))
        return out


def _fast_tflite(engine: Any, names: Sequence[tuple[str, tuple[int, ...] | None]]) -> None:
    """Re-create pyopen-wakeword's TFLite interpreters with one thread and XNNPACK.

    It creates them with default options: TFLite's default thread pool spins on every core,
    and its reference kernels run instead of XNNPACK's. Measured here for 60 s of speech
    through the feature models: 6.1 CPU s (default), 3.4 (one thread), 1.2 (one thread and
    the XNNPACK delegate), same outputs within 1e-4. The C API calls are TFLite's own
    (TfLiteInterpreterOptionsSetNumThreads, TfLiteXNNPackDelegateCreate,
    TfLiteInterpreterOptionsAddDelegate); the attribute names are pyopen-wakeword 1.1's
    (`<name>_model`, `<name>_interpreter`, `<name>_input_tensor`, `<name>_output_tensor`),
    so anything unexpected leaves the engine as it was.
    """
    import ctypes

    lib = engine.lib
    try:
        lib.TfLiteInterpreterOptionsCreate.restype = ctypes.c_void_p
        options = lib.TfLiteInterpreterOptionsCreate()
        lib.TfLiteInterpreterOptionsSetNumThreads.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.TfLiteInterpreterOptionsSetNumThreads(options, 1)
        lib.TfLiteXNNPackDelegateCreate.restype = ctypes.c_void_p
        lib.TfLiteXNNPackDelegateCreate.argtypes = [ctypes.c_void_p]
        delegate = lib.TfLiteXNNPackDelegateCreate(None)  # default options: one thread
        if delegate:
            lib.TfLiteInterpreterOptionsAddDelegate.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            lib.TfLiteInterpreterOptionsAddDelegate(options, delegate)
            # The delegate must outlive the interpreters that use it.
            engine.moltis_delegate = delegate
        for prefix, shape in names:
            attr = f"{prefix}_" if prefix else ""
            model = getattr(engine, f"{attr}model")
            interpreter = lib.TfLiteInterpreterCreate(model, options)
            if shape is not None:
                dims = (ctypes.c_int32 * len(shape))(*shape)
                lib.TfLiteInterpreterResizeInputTensor(
                    interpreter, ctypes.c_int32(0), dims, ctypes.c_int32(len(shape))
                )
            lib.TfLiteInterpreterAllocateTensors(interpreter)
            old = getattr(engine, f"{attr}interpreter")
            setattr(engine, f"{attr}interpreter", interpreter)
            setattr(
                engine,
                f"{attr}input_tensor",
                lib.TfLiteInterpreterGetInputTensor(interpreter, ctypes.c_int32(0)),
            )
            setattr(
                engine,
                f"{attr}output_tensor",
                lib.TfLiteInterpreterGetOutputTensor(interpreter, ctypes.c_int32(0)),
            )
            lib.TfLiteInterpreterDelete(old)
    except AttributeError as exc:  # a pyopen-wakeword other than the one this was made for
        _LOGGER.warning("wake word runs on TFLite's default options (%s)", exc)


def _load_classifier(spec: str) -> tuple[str, Any]:
    """(name, classifier) for a built-in model name or a model file path."""
    try:
        from pyopen_wakeword import OpenWakeWord
        from pyopen_wakeword.const import Model
    except ImportError:
        raise ModelMissingError(
            "the wake word needs pyopen-wakeword: pip install 'moltis-desktop[voice]'"
        ) from None
    if spec in BUILTIN_MODELS:
        clf = OpenWakeWord.from_builtin(Model(spec))
        _fast_tflite(clf, [("", None)])
        return spec, clf
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(BUILTIN_MODELS)
        raise ModelMissingError(
            f"wake-word model {spec!r} is neither built in ({known}) nor a file; set "
            "voice.wake.models to one of those or to the path of a .tflite/.onnx model"
        )
    if path.suffix == ".tflite":
        clf = OpenWakeWord.from_model(path)
        _fast_tflite(clf, [("", None)])
        return path.stem, clf
    if path.suffix == ".onnx":
        return path.stem, _OnnxClassifier(path)
    raise VoiceError(f"{path} is not a .tflite or .onnx openWakeWord model")


class WakeWordDetector:
    """Scores 80 ms chunks of 16 kHz audio against one or more wake-word models.

    Synchronous and CPU-bound: the listener calls it from a worker thread, never on the
    event loop. Optional VAD gating runs the (costlier) openWakeWord feature models only
    while there is speech, feeding them the last 2 s of audio when speech starts.

    `patience` (openWakeWord's own idea) is how many consecutive classifier frames (80 ms
    each) must score at or over the threshold before a model fires: a lone spike, as near
    misses make, does not wake it; each frame more costs 80 ms of latency.
    """

    def __init__(
        self,
        models: Sequence[str] = ("hey_jarvis",),
        *,
        threshold: float = 0.5,
        patience: int = 1,
        refractory_s: float = 2.0,
        vad: Vad | None = None,
    ) -> None:
        from pyopen_wakeword import OpenWakeWordFeatures
        from pyopen_wakeword.openwakeword import EMB_SHAPE, MEL_SHAPE

        if not models:
            raise VoiceError("no wake-word model is set: set voice.wake.models")
        if patience < 1:
            raise VoiceError("voice.wake.patience must be at least 1 (frames over the threshold)")
        self.threshold = threshold
        self.patience = patience
        self.refractory_s = refractory_s
        self.vad = vad
        self.features = OpenWakeWordFeatures.from_builtin()
        _fast_tflite(self.features, [("mel", MEL_SHAPE), ("emb", EMB_SHAPE)])
        self.classifiers = dict(_load_classifier(m) for m in models)
        self.position = 0
        """Samples seen so far."""
        self.last_scores: dict[str, float] = dict.fromkeys(self.classifiers, 0.0)
        self._last_fire: dict[str, float] = {}
        self._streak: dict[str, int] = dict.fromkeys(self.classifiers, 0)
        """Per model, consecutive frames scored at or over the threshold."""
        self._preroll: deque[Pcm] = deque(maxlen=int(_PREROLL_S * SAMPLE_RATE / CHUNK_SAMPLES))
        self._active_until = -1.0
        self.chunks_scored = 0

    def reset(self) -> None:
        """Forget the audio heard so far (after a wake, before listening again)."""
        self.features.reset()
        for clf in self.classifiers.values():
            clf.reset()
        self._streak = dict.fromkeys(self.classifiers, 0)
        self._preroll.clear()
        self._active_until = -1.0
        if self.vad is not None:
            self.vad.reset()

    def process(self, chunk: Pcm) -> list[Detection]:
        """Score one chunk; the wake words it completes (at most one per model)."""
        self.position += len(chunk)
        now = self.position / SAMPLE_RATE
        if self.vad is None:
            return self._score([chunk], now)
        if self.vad.is_speech(chunk):
            self._active_until = now + _HANGOVER_S
        if now > self._active_until:
            self._preroll.append(chunk)
            self._streak = dict.fromkeys(self.classifiers, 0)  # frames unscored: no streak
            return []
        pending = [*self._preroll, chunk]
        self._preroll.clear()
        return self._score(pending, now)

    def _score(self, chunks: list[Pcm], now: float) -> list[Detection]:
        fired = []
        for chunk in chunks:
            self.chunks_scored += 1
            for features in self.features.process_streaming(chunk.tobytes()):
                for name, clf in self.classifiers.items():
                    for score in clf.process_streaming(features):
                        self.last_scores[name] = score
                        if score < self.threshold:
                            self._streak[name] = 0
                            continue
                        self._streak[name] += 1
                        if self._streak[name] < self.patience:
                            continue
                        if now - self._last_fire.get(name, -1e9) < self.refractory_s:
                            continue
                        self._last_fire[name] = now
                        fired.append(Detection(name, BUILTIN_MODELS.get(name, name), score, now))
        return fired
