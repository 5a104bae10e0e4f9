"""The first-run dialog: the same steps as `moltis onboard` (moltis_desktop/onboarding.py),
in a window. Shown on first start when nothing is set up; rerun from the tray menu.

The local model (no account needed) hides the key and address rows and needs no connection
test: its models are listed with their state and size, and Save downloads one not
installed first, with a progress bar here (the model manager's download: checksummed,
resumable). A failed download says why and offers the built-in model.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.desktop.icons import app_icon
from moltis_desktop.modelstore.manager import mirror_from
from moltis_desktop.onboarding import (
    LOCAL,
    OLLAMA_URL,
    Choice,
    Plan,
    apply,
    check_connection,
    check_local,
    choices,
    install_local,
    needs_download,
    size_text,
)
from moltis_desktop.providers.local_catalog import BUILTIN_MODEL, CACHE_SUBDIR, LocalModelManager

if TYPE_CHECKING:
    from moltis_desktop.runtime import Runtime

_ERROR = "<span style='color:#c42b2b'>{}</span>"


class OnboardingDialog(QDialog):
    """Choose a provider, paste its key, test it, pick a model, name the assistant."""

    saved = Signal(str)
    """Emitted with `provider/model` once the choice is saved."""

    def __init__(
        self,
        runtime: Runtime,
        ollama_url: str = OLLAMA_URL,
        local_models: LocalModelManager | None = None,
    ) -> None:
        """`local_models`: the gateway's local model manager (one manager per process: a
        model is not downloaded twice at once); by default one over the runtime's cache."""
        super().__init__()
        self.runtime = runtime
        self.ollama_url = ollama_url
        self.local_models = local_models or _manager_for(runtime)
        self.options: list[Choice] = []
        self.plan: Plan | None = None
        self._task: asyncio.Task[None] | None = None
        self._download: asyncio.Task[None] | None = None
        self.setWindowTitle("Set up Moltis")
        self.setWindowIcon(app_icon())
        self.setMinimumWidth(560)
        self._make_fields()
        self._lay_out()

    def _make_fields(self) -> None:
        self.intro = intro = QLabel(
            "<b>Welcome to Moltis.</b><br>Choose the AI your assistant talks to: a model on "
            "this computer (no account needed), or a provider with an API key. Keys are kept "
            "in your system's keyring, never in a file."
        )
        intro.setWordWrap(True)
        self.provider = QComboBox()
        self.provider.setAccessibleName("Provider")
        self.provider.currentIndexChanged.connect(self._provider_changed)
        self.detail = QLabel("")  # short lines: a wrapped label would size the form wrong
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
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Download progress")
        self.use_builtin = QPushButton("Use the built-in model instead (no download)")
        self.use_builtin.clicked.connect(self._pick_builtin)
        self.model = QComboBox()
        self.model.setEnabled(False)
        self.model.setAccessibleName("Model")
        self.model.currentIndexChanged.connect(self._model_changed)
        self.name = QLineEdit("Molty")
        self.name.setAccessibleName("Assistant's name")

    def _lay_out(self) -> None:
        self.form = form = QFormLayout()
        form.addRow("Provider", self.provider)
        form.addRow("", self.detail)
        form.addRow("API key", self.key)
        form.addRow("Address (optional)", self.base_url)
        form.addRow("", self.test)
        form.addRow("Model", self.model)
        form.addRow("Assistant's name", self.name)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setEnabled(False)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        form.setRowVisible(self.detail, False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addLayout(form)
        # The messages (a test's answer, a download's progress and failure) under the form.
        for widget in (self.status, self.progress, self.use_builtin):
            widget.setVisible(False)
            layout.addWidget(widget)
        layout.addStretch(1)  # room left over goes below the fields, not between them
        layout.addWidget(self.buttons)

    def _show(self, widget: QWidget, visible: bool) -> None:
        """Show or hide a message, or the detail's row (a hidden row takes no room)."""
        if widget is self.detail:
            self.form.setRowVisible(widget, visible)
        else:
            widget.setVisible(visible)
        self._fit()

    def _fit(self) -> None:
        """Grow (or shrink) to what is shown, rather than squeeze the fields."""
        layout = self.layout()
        if layout is not None:
            layout.activate()
        self.adjustSize()

    def _status(self, html: str) -> None:
        self.status.setText(html)
        self._show(self.status, bool(html))  # (and fits the dialog to it)

    async def load(self) -> None:
        """Fill the provider list (asking a local Ollama first)."""
        self.options = await choices(self.ollama_url, self.local_models)
        self.provider.clear()
        for option in self.options:
            suffix = f" · {len(option.models)} models" if option.id == "ollama" else ""
            self.provider.addItem(option.label + suffix, option.id)
        self._provider_changed()

    def choice(self) -> Choice:
        return self.options[max(self.provider.currentIndex(), 0)]

    def _provider_changed(self) -> None:
        if not self.options:
            return
        option = self.choice()
        local = option.id == LOCAL
        for row in (self.key, self.base_url, self.test):
            self.form.setRowVisible(row, not local)
        self.key.setEnabled(option.needs_key)
        self.key.setPlaceholderText("paste the API key" if option.needs_key else "not needed")
        self.detail.setText(option.detail.replace("\n", "<br>"))
        self._show(self.detail, bool(option.detail))
        self._show(self.progress, False)
        self._show(self.use_builtin, False)
        self.model.clear()
        self.model.setEnabled(False)
        self.save_button.setEnabled(False)
        self.save_button.setText("Save")
        self._status("")
        if local:
            self._show_local(option)
        self._fit()

    def _show_local(self, option: Choice, model: str = "") -> None:
        """The local model's "test": its models, each with its state, no request."""
        self.plan = Plan(provider=LOCAL, model=model)
        try:
            check_local(self.plan, self.local_models)
        except MoltisError as exc:
            self._status(_ERROR.format(_escape(exc.message)))
            self.plan = None
            return
        self.model.blockSignals(True)
        self.model.clear()
        for entry in option.local_models:
            self.model.addItem(entry.label, entry.id)
        self.model.setCurrentIndex(max(self.model.findData(self.plan.model), 0))
        self.model.blockSignals(False)
        self.model.setEnabled(True)
        self._model_changed()

    def _model_changed(self) -> None:
        """The Save button says when saving downloads the model first."""
        if self.plan is None or self.plan.provider != LOCAL:
            return
        self.plan.model = str(self.model.currentData() or "")
        if not self.plan.model:
            return
        entry = self.local_models.catalog[self.plan.model]
        if needs_download(self.plan, self.local_models):
            self.save_button.setText(f"Download ({size_text(entry.size_bytes)}) and Save")
        else:
            self.save_button.setText("Save")
        self.save_button.setEnabled(True)

    def _pick_builtin(self) -> None:
        index = self.model.findData(BUILTIN_MODEL)
        if index >= 0:
            self.model.setCurrentIndex(index)
        self._show(self.use_builtin, False)
        self._status("")
        self._show(self.progress, False)

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
        self._status("Testing…")
        try:
            models = await check_connection(plan, self.local_models)
        except MoltisError as exc:
            self._status(_ERROR.format(_escape(exc.message)))
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
        self._status(f"Connected: {len(models)} models.")
        self.save_button.setEnabled(True)

    def save(self) -> None:
        if self.plan is None:
            return
        self.plan.model = str(self.model.currentData() or self.model.currentText())
        self.plan.assistant_name = self.name.text().strip()
        if needs_download(self.plan, self.local_models):
            if self._download is None or self._download.done():
                self._downloading(self.plan)
                self._download = asyncio.ensure_future(self.download_and_save(self.plan))
            return
        self._apply(self.plan)

    async def download_and_save(self, plan: Plan) -> None:
        """Download the plan's local model with the progress bar, then save."""
        title = self._downloading(plan)

        def progress(done: int, total: int) -> None:
            if total > 0:
                self.progress.setRange(0, 1000)
                self.progress.setValue(done * 1000 // total)
                self.progress.setFormat(f"%p% ({size_text(done)} of {size_text(total)})")

        try:
            await install_local(plan, self.local_models, progress)
        except MoltisError as exc:
            self._show(self.progress, False)
            self._status(
                _ERROR.format(_escape(exc.message))
                + ". Try again (the download resumes where it stopped), pick another model"
                " or provider, or use the built-in model, which needs no download."
            )
            self._show(self.use_builtin, plan.model != BUILTIN_MODEL)
            return
        finally:
            self._busy(False)
        self.progress.setValue(1000)
        self._status(f"Downloaded {title}.")
        self._apply(plan)

    def _downloading(self, plan: Plan) -> str:
        """Show a download starting (the widgets held, the progress bar); the model's title."""
        entry = self.local_models.catalog[plan.model]
        title = self.model.currentText().split(",")[0]
        self._busy(True)
        self._show(self.use_builtin, False)
        if not self.progress.isVisibleTo(self):
            self.progress.setRange(0, 0)  # until the server says how much
            self._show(self.progress, True)
        self._status(f"Downloading {title} ({size_text(entry.size_bytes)})…")
        return title

    def _busy(self, busy: bool) -> None:
        for widget in (self.provider, self.model, self.name, self.save_button):
            widget.setEnabled(not busy)
        if not busy:
            self._model_changed()

    def _apply(self, plan: Plan) -> None:
        store = self.runtime.config
        assert store is not None, "the runtime has not loaded its config"
        try:
            apply(plan, store, self.runtime.secrets)
        except MoltisError as exc:
            self._status(_ERROR.format(_escape(exc.message)))
            return
        self.saved.emit(f"{plan.provider}/{plan.model}")
        self.accept()

    def reject(self) -> None:
        """Cancel: a download in progress stops (its partial file stays, to resume)."""
        if self._download is not None and not self._download.done():
            self._download.cancel()
        super().reject()


def _manager_for(runtime: Runtime) -> LocalModelManager:
    """A local model manager over the runtime's cache, with its mirror (as the runtime's)."""
    configured = runtime.config.current.settings.models.local.mirror if runtime.config else ""
    return LocalModelManager(
        runtime.paths.cache_dir / CACHE_SUBDIR, mirror=mirror_from(configured, runtime.env)
    )


def _escape(text: str) -> str:
    """HTML-escaped, long words (paths, hashes) breakable so that the label can wrap them."""
    text = re.sub(r"[^\s]{28}(?=[^\s])", lambda m: m.group(0) + "\u200b", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
