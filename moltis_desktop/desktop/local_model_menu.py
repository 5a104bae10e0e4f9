"""The tray's Local Model submenu: the model the embedded provider runs, and a download of
the one recommended for this machine, with its progress in the menu and the tray tooltip.

A download goes through the gateway's own path (`gateway/model_downloads.py`), so the web
app sees the same `moltis.models.local.progress` events the tray follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QMenu

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.gateway.methods.local_models import PROGRESS_EVENT
from moltis_desktop.gateway.model_downloads import start_download

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState
    from moltis_desktop.providers.local_catalog import LocalModelManager

_LOGGER = logging.getLogger(__name__)


def _mb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def progress_text(title: str, done: int, total: int) -> str:
    """`Downloading <title>: 42% (206 MB of 491 MB)`."""
    if total <= 0:
        return f"Downloading {title}…"
    return f"Downloading {title}: {done * 100 // total}% ({_mb(done)} of {_mb(total)})"


class LocalModelMenu:
    """Builds the Local Model submenu and follows `moltis.models.local.progress`."""

    def __init__(
        self,
        gateway: GatewayState,
        *,
        show_progress: Callable[[str], None],
        notify: Callable[[str, str], None],
    ) -> None:
        self.gateway = gateway
        self.show_progress = show_progress
        """Shows a download's progress in the tray's tooltip ("" puts the usual one back)."""
        self.notify = notify
        self.progress: dict[str, dict[str, Any]] = {}
        """The latest progress event per model being downloaded."""

    @property
    def manager(self) -> LocalModelManager | None:
        manager: LocalModelManager | None = self.gateway.local_models
        return manager

    def start(self) -> None:
        self.gateway.events.listeners.append(self.on_event)

    def stop(self) -> None:
        if self.on_event in self.gateway.events.listeners:
            self.gateway.events.listeners.remove(self.on_event)

    def on_event(self, event: str, payload: Any) -> None:
        if event != PROGRESS_EVENT or not isinstance(payload, dict):
            return
        manager = self.manager
        model_id = str(payload.get("id", ""))
        title = model_id
        if manager is not None and model_id in manager.catalog:
            title = manager.catalog[model_id].title
        state = payload.get("state")
        if state == "downloading":
            self.progress[model_id] = payload
            self.show_progress(
                progress_text(title, int(payload.get("done", 0)), int(payload.get("total", 0)))
            )
            return
        self.progress.pop(model_id, None)
        self.show_progress("")
        if state == "done":
            self.notify("Local model ready", f"{title} is downloaded; it answers from now on")
        elif state == "error":
            self.notify("Local model download failed", str(payload.get("error", "")))

    def download(self, model_id: str) -> None:
        manager = self.manager
        if manager is None:
            return
        try:
            start_download(manager, model_id, self.gateway.events, PROGRESS_EVENT)
        except MoltisError as exc:
            self.notify("Local model", exc.message)
            return
        title = manager.catalog[model_id].title
        self.progress.setdefault(model_id, {"id": model_id, "done": 0, "total": 0})
        self.show_progress(progress_text(title, 0, 0))

    def build(self, parent: QMenu) -> QMenu | None:
        """The Local Model submenu as things are now (None without a manager)."""
        manager = self.manager
        if manager is None:
            return None
        menu = parent.addMenu("Local Model")
        statuses = {s.id: s for s in manager.list()}
        configured = self.gateway.settings.models.local.model.strip()
        active = configured or manager.best_installed() or ""
        if active in statuses:
            line = f"Running: {statuses[active].model.title}"
        elif active:
            line = f"Running: {active}"
        else:
            line = "No local model installed"
        menu.addAction(line).setEnabled(False)
        recommended = manager.recommended()
        for model_id, event in self.progress.items():
            title = statuses[model_id].model.title if model_id in statuses else model_id
            text = progress_text(title, int(event.get("done", 0)), int(event.get("total", 0)))
            menu.addAction(text).setEnabled(False)
        rec = statuses.get(recommended)
        if rec is not None and not rec.state and recommended not in self.progress:
            action = menu.addAction(f"Download {rec.model.title} ({_mb(rec.model.size_bytes)})")
            action.triggered.connect(lambda _=False, m=recommended: self.download(m))
        menu.addSeparator()
        others = menu.addMenu("All Models")
        for status in statuses.values():
            model = status.model
            if status.state:
                where = "built in" if model.tier == "builtin" else status.state
                others.addAction(f"{model.title}: {where}").setEnabled(False)
            elif model.files and status.id not in self.progress:
                action = others.addAction(f"Download {model.title} ({_mb(model.size_bytes)})")
                action.triggered.connect(lambda _=False, m=status.id: self.download(m))
        return menu
