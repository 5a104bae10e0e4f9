"""The voice loop on real (virtual) audio devices: a private PulseAudio daemon with a null
sink, PortAudio through ALSA's pulse plugin, our Microphone and Speaker.

What is played into the null sink `virt_out` can be recorded from its monitor, which is
made the default source: a question played through `Speaker` is heard by `Microphone`.
PortAudio reads the environment when it is imported, so the audio part runs in a child
Python with XDG_RUNTIME_DIR / PULSE_SERVER pointing at the daemon (reference:
platform-notes §7).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import stop_process
from tests.support.speech import similar

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "what is the weather today"
REPLY = "It is sunny and twenty two degrees."

pytestmark = [
    pytest.mark.xdist_group("audio"),
    pytest.mark.skipif(
        shutil.which("pulseaudio") is None or shutil.which("pactl") is None,
        reason="needs the Debian packages pulseaudio and pulseaudio-utils (`make install`)",
    ),
]

# The child: the whole loop on the default (pulse) devices. Prints one JSON line.
CHILD = r"""
import faulthandler; faulthandler.dump_traceback_later(140, exit=True)  # a hang shows where
import asyncio, json, sys, time
import numpy as np

from moltis_desktop.config.settings import ChimeSettings, TalkSettings, VoiceSettings
from moltis_desktop.voice.audio import Microphone, Speaker, list_devices
from moltis_desktop.voice.models import ModelManager
from moltis_desktop.voice.pipeline import VoicePipeline
from moltis_desktop.voice.stt import Transcriber
from moltis_desktop.voice.tts import PiperTts
from moltis_desktop.voice.vad import Vad
from moltis_desktop.voice.wakeword import WakeWordDetector
from tests.support import speech

REPLY = sys.argv[2]
# No barge-in: the reply played into the null sink is heard again on its monitor. No chimes:
# they would be mixed into the question.
SETTINGS = VoiceSettings(
    talk=TalkSettings(interrupt_on_speech=False),
    chimes=ChimeSettings(on_wake=False, on_send=False),
)


class HeardSource:
    # Microphone chunks, with the time and loudness of each (to see the reply come back).
    def __init__(self, inner):
        self.inner = inner
        self.first = asyncio.Event()
        self.levels = []

    async def chunks(self):
        async for chunk in self.inner.chunks():
            self.first.set()
            rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
            self.levels.append((time.monotonic(), rms))
            yield chunk


class ResultSink:
    # The Speaker, with what each play answered and when it ran.
    def __init__(self, inner):
        self.inner = inner
        self.plays = []

    async def play(self, pcm, rate):
        started = time.monotonic()
        played = await self.inner.play(pcm, rate)
        self.plays.append((started, time.monotonic(), bool(played), len(pcm) / rate))
        return played

    def stop(self):
        self.inner.stop()


async def main():
    out = {"devices": [d.as_dict() for d in list_devices()]}
    models = ModelManager(__import__("pathlib").Path(sys.argv[1]))
    transcriber = Transcriber(models.require("whisper/tiny.en"), threads=2)
    voice = models.require("piper/en_US-joe-medium")
    tts = PiperTts(lambda _v: voice, "en_US-joe-medium")
    await asyncio.to_thread(transcriber.load)
    await asyncio.to_thread(tts.load)
    question = speech.join(
        speech.piper_pcm("Hey Jarvis, what is the weather today?"), speech.silence(0.5)
    )

    async def ask(text):
        out.setdefault("asked", []).append(text)
        return REPLY

    events = []
    reply_done = asyncio.Event()

    def on_event(kind, data):
        events.append((kind, data))
        if kind == "state" and data["state"] == "listening" and any(
            k == "reply" for k, _ in events
        ):
            reply_done.set()
        if kind == "error":
            reply_done.set()

    source = HeardSource(Microphone(""))
    sink = ResultSink(Speaker(""))
    pipeline = VoicePipeline(
        source=source,
        sink=sink,
        detector=WakeWordDetector(("hey_jarvis",), vad=Vad()),
        vad=Vad(),
        transcriber=transcriber,
        tts=lambda: tts,
        ask=ask,
        settings=lambda: SETTINGS,
        on_event=on_event,
    )
    task = asyncio.get_running_loop().create_task(pipeline.run())
    try:
        print("waiting for first chunk", time.monotonic(), file=sys.stderr, flush=True)
        await asyncio.wait_for(source.first.wait(), 20)
        print("first chunk", time.monotonic(), file=sys.stderr, flush=True)
        await asyncio.sleep(0.5)
        out["question_played"] = await asyncio.wait_for(Speaker("").play(question, 16000), 30)
        print("question played", out["question_played"], time.monotonic(), file=sys.stderr)
        await asyncio.wait_for(reply_done.wait(), 40)
        print("reply done", time.monotonic(), file=sys.stderr, flush=True)
    except TimeoutError:
        out["timeout"] = True
    finally:
        print("cancelling", time.monotonic(), [k for k, _ in events], file=sys.stderr, flush=True)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        print("cancelled", time.monotonic(), file=sys.stderr, flush=True)
    plays = sink.plays
    heard_during_reply = [
        rms for t, rms in source.levels if plays and plays[0][0] + 0.3 <= t <= plays[-1][1]
    ]
    out.update(
        events=[[k, d] for k, d in events],
        transcripts=[t.transcript for t in pipeline.turns],
        reply_plays=[
            {"played": p[2], "seconds": round(p[1] - p[0], 2), "audio_s": round(p[3], 2)}
            for p in plays
        ],
        loudest_heard_during_reply=max(heard_during_reply, default=0.0),
        mic_dropped=pipeline.source.inner.dropped,
    )
    print(json.dumps(out))


asyncio.run(main())
"""

NO_DEVICE_CHILD = r"""
import json
from moltis_desktop.voice.audio import list_devices, resolve_device
from moltis_desktop.voice.errors import AudioDeviceError

out = {"devices": [d.as_dict() for d in list_devices()]}
for kind in ("input", "output"):
    try:
        out[kind] = {"index": resolve_device("", kind)}
    except AudioDeviceError as exc:
        out[kind] = {"error": str(exc)}
print(json.dumps(out))
"""


GONE_CHILD = r"""
import asyncio, json, subprocess, time
from moltis_desktop.voice.audio import Microphone
from moltis_desktop.voice.errors import AudioDeviceError


async def main():
    out = {"chunks": 0}
    started = None
    try:
        async for chunk in Microphone().chunks():
            out["chunks"] += 1
            if out["chunks"] == 12:  # ~1 s of audio, then the sound server goes away
                subprocess.run(["pactl", "exit"], check=False, timeout=10)
                started = time.monotonic()
            if out["chunks"] > 2000:
                break
    except AudioDeviceError as exc:
        out["error"] = str(exc)
        out["after_s"] = time.monotonic() - started if started else None
    print(json.dumps(out))


asyncio.run(main())
"""


def _child_env(runtime: Path, home: Path, pulse_server: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "XDG_RUNTIME"))}
    env.update(
        XDG_RUNTIME_DIR=str(runtime),
        PULSE_SERVER=pulse_server,
        HOME=str(home),
        PYTHONPATH=str(ROOT),
    )
    return env


def _run_child(code: str, env: dict[str, str], *args: str, timeout: float) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-4000:]
    return dict(json.loads(lines[-1]))


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio daemon with a null sink whose monitor is the default source;
    the environment a child needs to use it."""
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.mkdir()
    socket = runtime / "pulse" / "native"
    assert len(str(socket)) < 100, "unix socket paths are limited to 108 bytes"
    env = _child_env(runtime, home, f"unix:{socket}")
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--log-target=stderr",
            "-n",
            "--load=module-native-protocol-unix auth-anonymous=1",
            "--load=module-null-sink sink_name=virt_out",
            "--load=module-always-sink",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"pulseaudio exited: {proc.communicate()[1][-2000:]}"
            info = subprocess.run(
                ["pactl", "info"], env=env, capture_output=True, text=True, timeout=10, check=False
            )
            if info.returncode == 0:
                break
            assert time.monotonic() < deadline, f"pulseaudio not ready: {info.stderr}"
            time.sleep(0.1)
        subprocess.run(
            ["pactl", "set-default-source", "virt_out.monitor"],
            env=env,
            check=True,
            timeout=10,
            capture_output=True,
        )
        yield env
    finally:
        stop_process(proc, grace_s=5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.timeout(180)  # the child's own waits end by ~100 s; a hang dumps at 140 s
def test_wake_question_and_reply_through_virtual_devices(
    pulse: dict[str, str], tmp_path: Path
) -> None:
    result = _run_child(CHILD, pulse, str(tmp_path / "models"), REPLY, timeout=150)
    names = [d["name"] for d in result["devices"]]  # type: ignore[union-attr]
    assert "pulse" in names, names
    assert "default" in names, names
    assert not result.get("timeout"), result
    assert result["question_played"] is True, result
    events = result["events"]
    kinds = [kind for kind, _ in events]  # type: ignore[union-attr]
    assert "wake" in kinds, kinds
    transcripts = result["transcripts"]
    assert len(transcripts) == 1, result  # type: ignore[arg-type]
    assert similar(transcripts[0], QUESTION) >= 0.7, transcripts  # type: ignore[index]
    assert result["asked"] == transcripts, result
    assert ["reply", {"text": REPLY, "directive": False}] in events, kinds  # type: ignore[operator]
    plays = result["reply_plays"]
    assert plays, result
    assert all(p["played"] for p in plays), plays  # type: ignore[union-attr, index]
    # The reply really went through the null sink: its monitor heard it.
    assert result["loudest_heard_during_reply"] > 300, result  # type: ignore[operator]


def test_no_audio_server_gives_the_device_error(tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    env = _child_env(runtime, tmp_path, f"unix:{runtime / 'nothing-here'}")
    result = _run_child(NO_DEVICE_CHILD, env, timeout=60)
    assert result["devices"] == [], result
    for kind in ("input", "output"):
        error = result[kind]["error"]  # type: ignore[index]
        assert "moltis voice devices" in error, error
    assert "no microphone found" in result["input"]["error"]  # type: ignore[index]


def test_a_microphone_that_goes_away_says_so(pulse: dict[str, str]) -> None:
    """The sound server quits mid-listening (like a USB microphone pulled out): the
    microphone source raises our device error instead of waiting forever."""
    result = _run_child(GONE_CHILD, pulse, timeout=60)
    assert result["chunks"] >= 12, result
    assert "stopped sending audio" in str(result.get("error")), result
    assert result["after_s"] is not None and result["after_s"] < 8, result
