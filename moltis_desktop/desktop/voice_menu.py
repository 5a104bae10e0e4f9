"""The tray's Voice submenu and indicator: listening on/off, talk mode, push-to-talk (also a
global shortcut), speaking replies (to spoken questions, and to typed chat), the microphone
and the voice; the tray icon shows when Moltis listens to a question and when it speaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.desktop.shortcut import GlobalShortcut

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState
    from moltis_desktop.voice.service import VoiceService

_LOGGER = logging.getLogger(__name__)

_STATE_TEXT = {
    "off": "Voice is off",
    "idle": "Voice: ready (push to talk)",
    "listening": "Voice: listening for the wake word",
    "capturing": "Voice: listening to you…",
    "transcribing": "Voice: transcribing…",
    "thinking": "Voice: thinking…",
    "speaking": "Voice: speaking",
}
TRAY_STATE = {"capturing": "listening", "transcribing": "listening", "speaking": "speaking"}
"""Voice loop states shown by the tray icon (the others leave it as it is)."""


class VoiceMenu:
    """Builds the Voice submenu and follows the voice loop's events."""

    def __init__(
        self,
        gateway: GatewayState,
        *,
        set_tray_state: Callable[[str, str], None],
        notify: Callable[[str, str], None],
    ) -> None:
        self.gateway = gateway
        self.set_tray_state = set_tray_state
        self.notify = notify
        self.state = "off"
        self.last_transcript = ""
        self.shortcut = GlobalShortcut(self.push_to_talk)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def voice(self) -> VoiceService | None:
        service: VoiceService | None = self.gateway.voice
        return service

    def start(self) -> None:
        """Follow the voice events; register the push-to-talk shortcut."""
        if self.voice is not None:
            self.voice.observers.append(self.on_voice_event)
        sequence = self.gateway.settings.voice.push_to_talk_shortcut
        problem = self.shortcut.set(sequence, asyncio.get_event_loop())
        if problem:
            _LOGGER.warning("push-to-talk shortcut: %s", problem)

    def stop(self) -> None:
        self.shortcut.stop()
        if self.voice is not None and self.on_voice_event in self.voice.observers:
            self.voice.observers.remove(self.on_voice_event)

    # ------------------------------------------------------------------ events

    def on_voice_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "state":
            self.state = str(data.get("state", "off"))
            tray = TRAY_STATE.get(self.state)
            self.set_tray_state(tray or "idle", "")
        elif kind == "download" and not data.get("total"):
            self.notify("Downloading a voice model", f"{data.get('id')}: first use, once only")
        elif kind == "transcript":
            self.last_transcript = str(data.get("text", ""))
        elif kind == "error":
            message = str(data.get("message", ""))
            self.set_tray_state("error", message)
            self.notify("Voice", message)

    # ------------------------------------------------------------------ actions

    def _run(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_listening(self, on: bool) -> None:
        self._run(self._set_listening(on))

    async def _set_listening(self, on: bool) -> None:
        voice = self.voice
        if voice is None:
            self.notify("Voice", "voice is not installed (moltis-desktop[voice])")
            return
        try:
            if on:
                await voice.start()
            else:
                await voice.stop()
                self.state = "off"
                self.set_tray_state("idle", "")
        except MoltisError as exc:
            self.set_tray_state("error", exc.message)
            self.notify("Voice cannot listen", exc.message)
            return
        await self._save({"enabled": on})

    async def _save(self, patch: dict[str, Any]) -> None:
        async with self.gateway.config_lock:
            await asyncio.to_thread(self.gateway.config.patch, {"voice": patch})

    def push_to_talk(self) -> None:
        voice = self.voice
        if voice is None or not voice.listening:
            self.set_listening(True)
            self._run(self._push_when_ready())
            return
        try:
            voice.push_to_talk()
        except MoltisError as exc:
            self.notify("Voice", exc.message)

    async def _push_when_ready(self) -> None:
        for _ in range(100):
            voice = self.voice
            if voice is not None and voice.listening:
                voice.push_to_talk()
                return
            await asyncio.sleep(0.1)

    def set_talk_mode(self, on: bool) -> None:
        voice = self.voice
        try:
            if voice is None or not voice.listening:
                raise MoltisError("turn listening on first")
            voice.set_talk_mode(on)
        except MoltisError as exc:
            self.notify("Voice", exc.message)

    def set_speak_chat_replies(self, on: bool) -> None:
        """Speak the replies to typed chat too (saved); off stops one being spoken."""
        if not on and self.voice is not None:
            self.voice.hush()
        self._run(self._save({"tts": {"speak_chat_replies": on}}))

    def choose(self, key: str, value: str) -> None:
        """Save a voice setting (`input_device`, `tts.voice`, `tts.provider`, …)."""
        head, _, tail = key.partition(".")
        patch: dict[str, Any] = {head: {tail: value}} if tail else {head: value}
        self._run(self._save(patch))

    # ------------------------------------------------------------------ menu

    def build(self, parent: QMenu) -> QMenu:
        """The Voice submenu as things are now."""
        menu = parent.addMenu("Voice")
        voice = self.voice
        settings = self.gateway.settings.voice
        listening = bool(voice and voice.listening)
        status = menu.addAction(_STATE_TEXT.get(self.state, f"Voice: {self.state}"))
        status.setEnabled(False)
        if self.last_transcript and listening:
            heard = menu.addAction(f"Heard: “{self.last_transcript[:48]}”")
            heard.setEnabled(False)
        menu.addSeparator()
        phrase = " / ".join(m.replace("_", " ").title() for m in settings.wake.models)
        listen = _add(menu, f"Listen for “{phrase}”", self.set_listening)
        listen.setCheckable(True)
        listen.setChecked(listening)
        listen.setEnabled(voice is not None)
        talk = _add(menu, "Talk Mode", self.set_talk_mode)
        talk.setCheckable(True)
        talk.setChecked(bool(voice and voice.pipeline and voice.pipeline.talk_mode and listening))
        talk.setEnabled(listening)
        shortcut = settings.push_to_talk_shortcut
        ptt = _add(
            menu,
            "Push to Talk" + (f"\t{shortcut}" if shortcut else ""),
            lambda _=False: self.push_to_talk(),
        )
        ptt.setEnabled(voice is not None)
        speak = _add(menu, "Speak Replies", lambda on: self.choose("tts.enabled", on))
        speak.setCheckable(True)
        speak.setChecked(settings.tts.enabled)
        typed = _add(menu, "Speak Typed Chat Replies", self.set_speak_chat_replies)
        typed.setCheckable(True)
        typed.setChecked(settings.tts.speak_chat_replies)
        typed.setEnabled(voice is not None)
        menu.addSeparator()
        self._microphones(menu.addMenu("Microphone"), settings.input_device)
        self._voices(menu.addMenu("Voice"), settings.tts.provider, settings.tts.voice)
        return menu

    def _microphones(self, menu: QMenu, current: str) -> None:
        from moltis_desktop.voice.audio import list_devices

        group = QActionGroup(menu)
        default = _add(menu, "System Default", lambda _=False: self.choose("input_device", ""))
        default.setCheckable(True)
        default.setChecked(not current)
        group.addAction(default)
        try:
            devices = [d for d in list_devices() if d.inputs > 0]
        except MoltisError as exc:
            menu.addAction(exc.message[:80]).setEnabled(False)
            return
        if not devices:
            menu.addAction("No microphone found").setEnabled(False)
        for dev in devices:
            action = _add(
                menu, dev.name, lambda _=False, n=dev.name: self.choose("input_device", n)
            )
            action.setCheckable(True)
            action.setChecked(bool(current) and current.lower() in dev.name.lower())
            group.addAction(action)

    def _voices(self, menu: QMenu, provider: str, current: str) -> None:
        group = QActionGroup(menu)
        voice = self.voice
        choices: list[tuple[str, str]] = []
        if voice is not None:
            for status in voice.models.list():
                if status.model.kind == "tts":
                    name = status.model.id.split("/", 1)[1]
                    mark = "" if status.state else " (download)"
                    choices.append((name, f"{name}{mark}"))
        for name, label in choices:
            action = _add(menu, label, lambda _=False, n=name: self._pick_voice(n))
            action.setCheckable(True)
            action.setChecked(provider == "piper" and name == current)
            group.addAction(action)
        menu.addSeparator()
        cloud = _add(menu, "OpenAI (cloud)", lambda _=False: self.choose("tts.provider", "openai"))
        cloud.setCheckable(True)
        cloud.setChecked(provider == "openai")
        group.addAction(cloud)

    def _pick_voice(self, name: str) -> None:
        self._run(self._save({"tts": {"provider": "piper", "voice": name}}))
        voice = self.voice
        if voice is not None and voice.models.path(f"piper/{name}") is None:
            self.notify("Downloading voice", f"{name} is being downloaded")
            self._run(voice.models.download(f"piper/{name}"))


def _add(menu: QMenu, text: str, slot: Any) -> QAction:
    action = menu.addAction(text)
    action.triggered.connect(slot)
    return action
