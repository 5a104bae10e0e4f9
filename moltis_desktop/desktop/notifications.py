"""The tray icon's notifications: a reply that ended while the chat window was not in front,
a reply that could not start because no model is set up, a node's `system.notify`, a
pairing request, and passing messages. Clicking one opens the session of the last
notification kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QSystemTrayIcon

from moltis_desktop.desktop.icons import app_icon

REPLIES_KEY = "notifications/replies"
"""The preference (in desktop.ini) that turns reply and node notifications on or off."""


@dataclass
class Notification:
    title: str
    text: str
    session_key: str


class Notifier:
    """Shows messages from the tray icon and keeps the notifications a click opens."""

    def __init__(
        self,
        tray: QSystemTrayIcon,
        prefs: QSettings,
        *,
        open_chat: Callable[[str], None],
        chat_in_front: Callable[[], bool],
    ) -> None:
        self.tray = tray
        self.prefs = prefs
        self.open_chat = open_chat
        """Opens the chat window on a session (the clicked notification's)."""
        self.chat_in_front = chat_in_front
        """Whether the chat window is the active one (then a reply is seen: no notification)."""
        self.notifications: list[Notification] = []
        tray.messageClicked.connect(self.clicked)

    @property
    def replies_on(self) -> bool:
        """Reply (and node) notifications are on (Settings)."""
        return self.prefs.value(REPLIES_KEY, True, type=bool) is not False

    def set_replies_on(self, on: bool) -> None:
        self.prefs.setValue(REPLIES_KEY, on)
        self.prefs.sync()

    def message(self, title: str, text: str, *, state: str = "idle", msecs: int = 10000) -> None:
        """A message from the tray icon (with the icon of `state`), not kept."""
        self.tray.showMessage(title, text, app_icon(state), msecs)

    def keep(self, note: Notification) -> bool:
        """Show `note` and keep it (a click opens its session); whether the desktop can
        show it (the tray icon is visible and supports messages)."""
        delivered = self.tray.isVisible() and QSystemTrayIcon.supportsMessages()
        self.notifications.append(note)
        self.tray.showMessage(note.title, note.text, app_icon(), 8000)
        return bool(delivered)

    def reply_finished(self, payload: dict[str, Any]) -> None:
        """A `chat` final event: a notification with the reply's start, unless replies are
        off or the chat window is in front."""
        if not self.replies_on:
            return
        if self.chat_in_front():
            return
        content = (payload.get("message") or {}).get("content") or []
        text = "".join(b.get("text", "") for b in content if isinstance(b, dict)).strip()
        if not text:
            return
        self.keep(Notification("Moltis replied", text[:160], str(payload.get("sessionKey", ""))))

    def setup_needed(self, payload: dict[str, Any]) -> None:
        """A `moltis.chat.setup` event (a reply failed: nothing is set up to answer): unless
        the chat window is in front, where the notice shows, a notification that opens the
        chat on that session, whose notice has the buttons. Shown even with reply
        notifications off: without it, a message sent from elsewhere gets no answer."""
        if self.chat_in_front():
            return
        message = str(payload.get("message") or "No model is set up yet.")
        self.keep(
            Notification(
                "Moltis needs a model",
                f"{message} Click to open the chat and set one up.",
                str(payload.get("sessionKey", "")),
            )
        )

    def pairing_requested(self, who: str, role: object) -> None:
        self.message(
            "Pairing request",
            f"{who} wants to pair as {role}. Approve it from the tray menu (Pairing Requests).",
            state="attention",
            msecs=15000,
        )

    def clicked(self) -> None:
        if self.notifications:
            self.open_chat(self.notifications[-1].session_key)
