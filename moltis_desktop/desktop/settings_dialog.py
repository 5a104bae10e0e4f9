"""Native settings: what the web app's config cannot do (start at login, notifications, a
global shortcut), and ways into the web app's Voice page and the full configuration."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from moltis_desktop.desktop.autostart import Autostart
from moltis_desktop.desktop.icons import app_icon


class SettingsDialog(QDialog):
    def __init__(
        self,
        autostart: Autostart,
        *,
        notifications: bool,
        on_notifications: Callable[[bool], None],
        shortcut: str,
        on_shortcut: Callable[[str], str | None],
        open_config: Callable[[], None],
        open_onboarding: Callable[[], object],
        open_voice: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Moltis Settings")
        self.setWindowIcon(app_icon())
        self.setMinimumWidth(420)
        self.autostart = autostart
        self.login = QCheckBox("Start Moltis when I log in")
        self.login.setChecked(autostart.enabled())
        self.login.toggled.connect(self._login)
        self.notify = QCheckBox("Notify me when a reply arrives while the chat is hidden")
        self.notify.setChecked(notifications)
        self.notify.toggled.connect(on_notifications)
        self._on_shortcut = on_shortcut
        self.shortcut = QKeySequenceEdit(QKeySequence(shortcut))
        self.shortcut.setMaximumSequenceLength(1)
        self.shortcut.setClearButtonEnabled(True)
        self.shortcut.setAccessibleName("Shortcut that opens the chat")
        self.shortcut.editingFinished.connect(self._shortcut_changed)
        self.shortcut_status = QLabel("")
        self.shortcut_status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Open the chat from anywhere with"))
        row.addWidget(self.shortcut)
        config = QPushButton("Models, providers and everything else…")
        config.clicked.connect(open_config)
        setup = QPushButton("Set up a provider again…")
        setup.clicked.connect(open_onboarding)
        voice = QPushButton("Voice: wake word, microphone, voices and models…")
        voice.setEnabled(open_voice is not None)
        if open_voice is not None:
            voice.clicked.connect(open_voice)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>This computer</b>"))
        layout.addWidget(self.login)
        layout.addWidget(self.notify)
        layout.addLayout(row)
        layout.addWidget(self.shortcut_status)
        layout.addSpacing(8)
        layout.addWidget(QLabel("<b>Configuration</b>"))
        layout.addWidget(voice)
        layout.addWidget(config)
        layout.addWidget(setup)
        layout.addWidget(buttons)

    def _shortcut_changed(self) -> None:
        text = self.shortcut.keySequence().toString(QKeySequence.SequenceFormat.PortableText)
        problem = self._on_shortcut(text)
        self.shortcut_status.setText(
            problem or (f"{text} opens the chat." if text else "No shortcut.")
        )

    def _login(self, checked: bool) -> None:
        if checked:
            self.autostart.enable()
        else:
            self.autostart.disable()
