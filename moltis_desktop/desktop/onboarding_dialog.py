"""The first-run dialog: the same steps as `moltis onboard` (moltis_desktop/onboarding.py),
in a window. Shown on first start when nothing is set up; rerun from the tray menu."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.desktop.icons import app_icon
from moltis_desktop.onboarding import OLLAMA_URL, Choice, Plan, apply, check_connection, choices

if TYPE_CHECKING:
    from moltis_desktop.runtime import Runtime


class OnboardingDialog(QDialog):
    """Choose a provider, paste its key, test it, pick a model, name the assistant."""

    saved = Signal(str)
    """Emitted with `provider/model` once the choice is saved."""

    def __init__(self, runtime: Runtime, ollama_url: str = OLLAMA_URL) -> None:
        super().__init__()
        self.runtime = runtime
        self.ollama_url = ollama_url
        self.options: list[Choice] = []
        self.plan: Plan | None = None
        self._task: asyncio.Task[None] | None = None
        self.setWindowTitle("Set up Moltis")
        self.setWindowIcon(app_icon())
        self.setMinimumWidth(480)

        intro = QLabel(
            "<b>Welcome to Moltis.</b><br>Choose the AI provider your assistant talks to. "
            "API keys are kept in your system's keyring, never in a file."
        )
        intro.setWordWrap(True)
        self.provider = QComboBox()
        self.provider.setAccessibleName("Provider")
        self.provider.currentIndexChanged.connect(self._provider_changed)
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("paste the API key")
        self.key.setAccessibleName("API key")
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("the provider's own address")
        self.base_url.setAccessibleName("API address")
        self.test = QPushButton("Test connection")
        self.test.clicked.connect(self.start_test)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model = QComboBox()
        self.model.setEnabled(False)
        self.model.setAccessibleName("Model")
        self.name = QLineEdit("Molty")
        self.name.setAccessibleName("Assistant's name")

        form = QFormLayout()
        form.addRow("Provider", self.provider)
        form.addRow("API key", self.key)
        form.addRow("Address (optional)", self.base_url)
        form.addRow("", self.test)
        form.addRow("", self.status)
        form.addRow("Model", self.model)
        form.addRow("Assistant's name", self.name)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setEnabled(False)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

    async def load(self) -> None:
        """Fill the provider list (asking a local Ollama first)."""
        self.options = await choices(self.ollama_url)
        self.provider.clear()
        for option in self.options:
            suffix = f" · {len(option.models)} models" if option.local and option.models else ""
            self.provider.addItem(option.label + suffix, option.id)
        self._provider_changed()

    def choice(self) -> Choice:
        return self.options[max(self.provider.currentIndex(), 0)]

    def _provider_changed(self) -> None:
        if not self.options:
            return
        option = self.choice()
        self.key.setEnabled(option.needs_key)
        self.key.setPlaceholderText("paste the API key" if option.needs_key else "not needed")
        self.model.clear()
        self.model.setEnabled(False)
        self.save_button.setEnabled(False)
        self.status.setText("")

    def start_test(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run_test())

    async def run_test(self) -> None:
        option = self.choice()
        plan = Plan(
            provider=option.id,
            key=self.key.text().strip(),
            base_url=self.base_url.text().strip(),
        )
        if option.id == "ollama" and not plan.base_url and self.ollama_url != OLLAMA_URL:
            plan.base_url = self.ollama_url.rstrip("/") + "/v1"
        self.test.setEnabled(False)
        self.status.setText("Testing…")
        try:
            models = await check_connection(plan)
        except MoltisError as exc:
            self.status.setText(f"<span style='color:#c42b2b'>{_escape(exc.message)}</span>")
            self.plan = None
            self.save_button.setEnabled(False)
            return
        finally:
            self.test.setEnabled(True)
        self.plan = plan
        self.model.clear()
        self.model.addItems(models)
        self.model.setCurrentText(plan.model)
        self.model.setEnabled(True)
        self.status.setText(f"Connected: {len(models)} models.")
        self.save_button.setEnabled(True)

    def save(self) -> None:
        if self.plan is None:
            return
        self.plan.model = self.model.currentText()
        self.plan.assistant_name = self.name.text().strip()
        store = self.runtime.config
        assert store is not None, "the runtime has not loaded its config"
        try:
            apply(self.plan, store, self.runtime.secrets)
        except MoltisError as exc:
            self.status.setText(f"<span style='color:#c42b2b'>{_escape(exc.message)}</span>")
            return
        self.saved.emit(f"{self.plan.provider}/{self.plan.model}")
        self.accept()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
