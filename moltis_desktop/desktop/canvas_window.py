"""The canvas window: a web view on what the agent presents (QtWebEngine; imported only
when the canvas is first used)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QCloseEvent
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile
from PySide6.QtWebEngineWidgets import QWebEngineView

from moltis_desktop.desktop.icons import app_icon


class CanvasWindow(QWebEngineView):
    """A plain web view; closing it only hides it."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.setWindowTitle("Moltis Canvas")
        self.setWindowIcon(app_icon())
        profile = QWebEngineProfile("moltis-canvas", self)
        profile.setPersistentStoragePath(str(data_dir / "webengine-canvas"))
        self.setPage(QWebEnginePage(profile, self))
        self.resize(900, 700)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        event.ignore()
        self.hide()
