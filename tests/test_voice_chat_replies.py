"""Typed chat replies spoken on this machine (`voice.tts.speak_chat_replies`, reported as
`tts.status.auto`): a real gateway with the fake LLM, piper speaking into a memory sink,
Whisper reading the speech back."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from moltis_desktop.voice.audio import SAMPLE_RATE, MemorySink, WavSource, resample, wav_bytes
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support import speech
from tests.support.fake_llm import FakeLLM, Turn, agent_config
from tests.support.wsclient import ProtoClient

KEY_ENV = {"FAKE_LLM_KEY": "fake-key-0123456789"}
SCOPES = ["operator.read", "operator.write", "operator.admin"]
REPLY = "The kettle is on and the tea will be ready soon."
LONG_REPLY = " ".join(["The garden needs water in the morning and again at night."] * 12)
STEP_S = 60.0


async def _gateway(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> tuple[GatewayHandle, ProtoClient]:
    handle = await start_gateway(agent_config("openai", fake), env=KEY_ENV)
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=SCOPES)
    assert res["ok"], res
    return handle, client


async def _until(pred: Callable[[], bool], timeout: float = STEP_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _event(client: ProtoClient, pred: Callable[[dict[str, Any]], bool]) -> Any:
    """The payload of the first event (already received or still to come) that `pred`
    accepts; the events before it are dropped."""
    async with asyncio.timeout(STEP_S):
        while True:
            while client.events:
                frame = client.events.pop(0)
                if pred(frame):
                    return frame.get("payload")
            await client.recv()


async def _typed(client: ProtoClient, text: str, run_id: str | None = None) -> str:
    """A typed chat message (as the web app sends it); waits for its reply's final event."""
    run_id = run_id or str(uuid.uuid4())
    res = await client.call(
        "chat.send", {"sessionKey": "main", "message": text, "idempotencyKey": run_id}
    )
    assert res["status"] == "started", res
    await _event(
        client,
        lambda f: (
            f["event"] == "chat"
            and f["payload"].get("runId") == run_id
            and f["payload"].get("state") == "final"
        ),
    )
    return run_id


def _heard(handle: GatewayHandle, sink: MemorySink) -> str:
    pcm = np.concatenate([p for p, _ in sink.played])
    rate = sink.played[0][1]
    transcriber = handle.gateway.state.voice.transcriber()
    return str(transcriber.transcribe_pcm(resample(pcm, rate, SAMPLE_RATE)).text)


async def test_typed_chat_replies_are_spoken_when_auto_is_on(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    handle, client = await _gateway(start_gateway, make_client, fake)
    voice = handle.gateway.state.voice
    sink = MemorySink()
    voice.say_sink = sink

    # Off by default: a typed reply is only shown.
    assert (await client.call("tts.status", {}))["auto"] == "off"
    fake.script(Turn(text=REPLY))
    await _typed(client, "is the kettle on?")
    await asyncio.sleep(0.5)
    assert not sink.played and not voice.saying

    # On over the gateway: saved, announced, reported as `auto`.
    assert await client.call("moltis.tts.setAuto", {"auto": "always"}) == {"auto": "always"}
    saved = tomllib.loads(handle.config_file.read_text(encoding="utf-8"))
    assert saved["voice"]["tts"]["speak_chat_replies"] is True
    status = await client.call("tts.status", {})
    assert status["auto"] == "always" and status["enabled"] is True
    changed = await _event(client, lambda f: f["event"] == "moltis.tts.changed")
    assert changed["auto"] == "always"

    # A typed message's reply is spoken, and Whisper hears the reply in it.
    fake.script(Turn(text=REPLY))
    await _typed(client, "is the kettle on?")
    await _until(lambda: bool(sink.played) and not voice.saying)
    heard = await asyncio.to_thread(_heard, handle, sink)
    assert speech.similar(heard, REPLY) >= 0.8, heard

    # A spoken question sent by `moltis voice listen` (a `voice-` run) is spoken by the CLI,
    # not by the gateway as well.
    sink.played.clear()
    fake.script(Turn(text=REPLY))
    await _typed(client, "is the kettle on?", run_id=f"voice-{uuid.uuid4()}")
    await asyncio.sleep(0.5)
    assert not sink.played and not voice.saying

    bad = await client.request("moltis.tts.setAuto", {"auto": "tagged"})
    assert not bad["ok"] and bad["error"]["code"] == "INVALID_REQUEST"


async def test_a_spoken_chat_reply_stops_when_auto_is_turned_off_or_a_question_starts(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    handle, client = await _gateway(start_gateway, make_client, fake)
    voice = handle.gateway.state.voice
    sink = MemorySink(realtime=True)  # plays as long as the audio lasts, like a speaker
    voice.say_sink = sink
    await client.call("moltis.tts.setAuto", {"auto": "always"})

    # Turned off while it speaks: the speech stops at once, nothing more is played.
    fake.script(Turn(text=LONG_REPLY))
    await _typed(client, "tell me about the garden")
    await _until(lambda: sink.playing)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await client.call("moltis.tts.setAuto", {"auto": "off"})
    await _until(lambda: not voice.saying, timeout=5)
    assert sink.stopped_at and sink.stopped_at[0] - asked < 0.2, sink.stopped_at
    played = len(sink.played)
    await asyncio.sleep(0.5)
    assert len(sink.played) == played, "speech went on after it was stopped"
    saved = tomllib.loads(handle.config_file.read_text(encoding="utf-8"))
    assert saved["voice"]["tts"]["speak_chat_replies"] is False

    # A question to the voice loop (push to talk here; the wake word alike) stops it too.
    quiet = WavSource(wav_bytes(np.zeros(SAMPLE_RATE * 30, np.int16), SAMPLE_RATE), realtime=True)
    await voice.start(source=quiet, sink=MemorySink())
    await client.call("moltis.tts.setAuto", {"auto": "always"})
    sink.stopped_at.clear()
    fake.script(Turn(text=LONG_REPLY))
    await _typed(client, "tell me about the garden")
    await _until(lambda: sink.playing)
    asked = loop.time()
    voice.push_to_talk()
    await _until(lambda: not voice.saying, timeout=5)
    assert voice.pipeline is not None and voice.pipeline.state == "capturing"
    assert sink.stopped_at and sink.stopped_at[0] - asked < 0.3, sink.stopped_at
    await voice.stop()
