"""The tray's voice: the Voice submenu, the icon while Moltis listens and speaks, and what
happens without a microphone (Qt offscreen, the real runtime and voice models)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication, QMenu

from moltis_desktop.desktop.app import DesktopApp
from moltis_desktop.voice.audio import MemorySink, WavSource, wav_bytes
from tests.support import speech
from tests.support.browser import widget_shot
from tests.support.fake_llm import FakeLLM, Turn, agent_config
from tests.test_desktop import make_runtime, qt_run, running_app, until


def _voice_menu(app: DesktopApp) -> QMenu:
    app.rebuild_menu()
    for action in app.menu.actions():
        if action.text() == "Voice" and action.menu() is not None:
            menu = action.menu()
            assert isinstance(menu, QMenu)
            return menu
    raise AssertionError("no Voice submenu")


def test_voice_menu_tray_states_and_no_microphone(qapp: QApplication, tmp_path: Path) -> None:
    async def body() -> None:
        async with FakeLLM() as fake:
            runtime = make_runtime(
                tmp_path / "home",
                agent_config("openai", fake),
                FAKE_LLM_KEY="k",
                XDG_RUNTIME_DIR=str(tmp_path),
                PULSE_SERVER=f"unix:{tmp_path}/no-pulse",
            )
            async with running_app(qapp, runtime) as app:
                await runtime.agent_ready()
                gw = app.gateway_state
                assert gw is not None and gw.voice is not None
                menu = _voice_menu(app)
                texts = [a.text() for a in menu.actions() if not a.isSeparator()]
                assert texts[0] == "Voice is off"
                assert "Listen for “Hey Jarvis”" in texts
                assert "Push to Talk\tCtrl+Alt+Space" in texts
                assert {"Talk Mode", "Speak Replies", "Microphone", "Voice"} <= set(texts)
                assert "Speak Typed Chat Replies" in texts
                talk = next(a for a in menu.actions() if a.text() == "Talk Mode")
                assert not talk.isEnabled(), "talk mode needs listening on"
                voices = next(a for a in menu.actions() if a.text() == "Voice").menu()
                assert voices is not None
                joe = next(a for a in voices.actions() if a.text() == "en_US-joe-medium")
                assert joe.isChecked(), "the configured voice is ticked"
                widget_shot(menu, "tray-voice-menu")

                # Speaking typed chat's replies: off by default, toggled here, saved.
                typed = next(a for a in menu.actions() if a.text() == "Speak Typed Chat Replies")
                assert typed.isCheckable() and not typed.isChecked() and typed.isEnabled()
                typed.trigger()

                async def saved_on() -> bool:
                    return gw.settings.voice.tts.speak_chat_replies

                await until(saved_on)
                assert "speak_chat_replies = true" in runtime.paths.config_file.read_text()
                again = _voice_menu(app)
                typed = next(a for a in again.actions() if a.text() == "Speak Typed Chat Replies")
                assert typed.isChecked()
                typed.trigger()

                async def saved_off() -> bool:
                    return not gw.settings.voice.tts.speak_chat_replies

                await until(saved_off)

                # No microphone here: turning listening on says what to do, on the icon too.
                listen = next(a for a in menu.actions() if a.text().startswith("Listen for"))
                listen.trigger()

                async def errored() -> bool:
                    return app.state == "error"

                await until(errored)
                assert "microphone" in app.tray.toolTip()
                assert not gw.voice.listening

                # A question through the loop (a file for a microphone): the icon shows that
                # Moltis listens, then that it speaks, then it is back to ready.
                app._set_state("idle")
                seen: list[str] = []
                gw.voice.observers.append(lambda kind, data: seen.append(app.state))
                fake.script(Turn(text="It is sunny and warm today."))
                audio = speech.wake_then_question("what is the weather today")
                await gw.voice.start(
                    source=WavSource(wav_bytes(audio, speech.RATE), realtime=True),
                    sink=MemorySink(realtime=True),
                )

                async def finished() -> bool:
                    return not gw.voice.listening

                await until(finished, timeout=60)
                assert "listening" in seen and "speaking" in seen, seen
                assert seen.index("listening") < seen.index("speaking")
                assert app.state == "idle"

    qt_run(qapp, body())
