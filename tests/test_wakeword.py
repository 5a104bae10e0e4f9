"""The wake-word detector on the real openWakeWord models: built-in and user model files
(.tflite, .onnx), threshold, patience, refractory period, VAD gating, and the errors for bad
models."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from moltis_desktop.voice.audio import CHUNK_SAMPLES
from moltis_desktop.voice.errors import ModelMissingError, VoiceError
from moltis_desktop.voice.vad import Vad
from moltis_desktop.voice.wakeword import Detection, WakeWordDetector, phrase_to_model
from tests.support import speech


def _run(detector: WakeWordDetector, pcm: np.ndarray) -> list[Detection]:
    out: list[Detection] = []
    for i in range(0, len(pcm) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES):
        out += detector.process(pcm[i : i + CHUNK_SAMPLES])
    return out


def _jarvis() -> np.ndarray:
    return speech.join(speech.silence(1.0), speech.piper_pcm("Hey Jarvis!"), speech.silence(1.0))


def _builtin_file(name: str) -> Path:
    import pyopen_wakeword

    return Path(pyopen_wakeword.__file__).parent / "models" / f"{name}.tflite"


def test_a_user_tflite_model_file_is_used_by_its_name(tmp_path: Path) -> None:
    mine = tmp_path / "my_wake.tflite"
    shutil.copy(_builtin_file("hey_jarvis"), mine)
    (hit,) = _run(WakeWordDetector([str(mine)]), _jarvis())
    assert hit.model == "my_wake" and hit.phrase == "my_wake" and hit.score >= 0.5
    # Other built-in models do not fire on it.
    assert _run(WakeWordDetector(["alexa", "okay_nabu"]), _jarvis()) == []


def test_threshold_and_refractory_period() -> None:
    twice = speech.join(
        _jarvis(), speech.silence(2.0), speech.piper_pcm("Hey Jarvis!"), speech.silence(1.0)
    )
    hits = _run(WakeWordDetector(refractory_s=1.5), twice)
    assert len(hits) == 2 and hits[1].at_s - hits[0].at_s > 2.5
    # The second one comes ~3 s after the first: inside a 6 s refractory period.
    assert len(_run(WakeWordDetector(refractory_s=6.0), twice)) == 1
    scores = [d.score for d in _run(WakeWordDetector(refractory_s=0.0), _jarvis())]
    assert _run(WakeWordDetector(threshold=min(0.9999, max(scores) + 1e-4)), _jarvis()) == []


def test_patience_needs_consecutive_frames_over_the_threshold() -> None:
    """Found by experiment: espeak's `en-us+f2` "hey jarvis" at 120 wpm scores 0.735 for one
    80 ms frame, under 0.5 before and after; piper's "Hey Jarvis!" stays over it for longer.
    A lone frame over the threshold fires at patience 1 only; a held phrase fires at every
    patience, one frame (80 ms) later for each."""
    spike = speech.join(
        speech.silence(1.0),
        speech.read(speech.espeak("hey jarvis", speed=120, pitch=50, voice="en-us+f2")),
        speech.silence(1.0),
    )
    (hit,) = _run(WakeWordDetector(patience=1), spike)
    assert hit.score > 0.7
    for gate in (None, Vad()):
        assert _run(WakeWordDetector(patience=2, vad=gate), spike) == []
    held = [_run(WakeWordDetector(patience=p, vad=Vad()), _jarvis()) for p in (1, 2, 3, 4)]
    assert [len(hits) for hits in held] == [1, 1, 1, 1]
    at = [hits[0].at_s for hits in held]
    assert [round(b - a, 2) for a, b in itertools.pairwise(at)] == [0.08, 0.08, 0.08]
    # One detector, the spike and then (after reset) the held phrase: only the phrase fires.
    detector = WakeWordDetector(patience=2)
    assert _run(detector, spike) == []
    detector.reset()
    assert len(_run(detector, _jarvis())) == 1
    with pytest.raises(VoiceError, match="patience"):
        WakeWordDetector(patience=0)


def test_vad_gating_skips_silence_and_still_hears_the_phrase() -> None:
    audio = speech.join(speech.silence(8.0), _jarvis())
    gated = WakeWordDetector(vad=Vad())
    plain = WakeWordDetector()
    assert len(_run(gated, audio)) == 1 and len(_run(plain, audio)) == 1
    # The feature models ran on the speech (and the 2 s before it), not on 8 s of silence.
    assert gated.chunks_scored < plain.chunks_scored * 0.6


def test_an_onnx_classifier_streams_on_the_same_features(tmp_path: Path) -> None:
    """openWakeWord also trains to ONNX: such a classifier runs on onnxruntime. This one is
    made here (no ONNX wake-word model is published on PyPI): sigmoid(mean(x) * 0 + 3),
    a constant 0.95 once it has a full window of embeddings."""
    import onnx
    from onnx import TensorProto, helper

    windows = 16
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
            helper.make_node("Mul", ["m", "zero"], ["z"]),
            helper.make_node("Add", ["z", "three"], ["s"]),
            helper.make_node("Sigmoid", ["s"], ["p"]),
            helper.make_node("Reshape", ["p", "shape"], ["y"]),
        ],
        "clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, windows, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("three", TensorProto.FLOAT, [], [3.0]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "always.onnx"
    onnx.save(model, str(path))
    detector = WakeWordDetector([str(path)], refractory_s=2.0)
    hits = _run(detector, speech.silence(5.0))
    # A score on every chunk once the window is full; the refractory period spaces them.
    assert len(hits) == 3 and {h.model for h in hits} == {"always"}
    assert hits[0].score == pytest.approx(1 / (1 + np.exp(-3)), abs=1e-5)
    assert all(b.at_s - a.at_s >= 2.0 for a, b in itertools.pairwise(hits))


def test_bad_models_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match=r"hey_jarvis.*voice\.wake\.models"):
        WakeWordDetector(["hey_marvin"])
    with pytest.raises(ModelMissingError, match="neither built in"):
        WakeWordDetector([str(tmp_path / "missing.tflite")])
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(VoiceError, match=r"not a \.tflite or \.onnx"):
        WakeWordDetector([str(other)])
    with pytest.raises(VoiceError, match="no wake-word model"):
        WakeWordDetector([])


def test_trigger_phrases_map_to_builtin_models() -> None:
    assert phrase_to_model("Hey Jarvis") == "hey_jarvis"
    assert phrase_to_model("okay, nabu") == "okay_nabu"
    assert phrase_to_model("computer") is None
