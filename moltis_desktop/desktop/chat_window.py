"""The chat window: a QWebEngineView on the gateway's own web app.

QtWebEngine is heavy (a Chromium): this module is imported only when a window first opens.
The page is signed in with a one-time ticket minted in-process (`/#ticket=…`; the page
trades it for the credential and clears it at once), so no credential is ever in a URL,
and there is no address bar to see one in anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from PySide6.QtCore import QByteArray, QObject, QSettings, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWebEngineCore import (
    QWebEngineDownloadRequest,
    QWebEnginePage,
    QWebEngineProfile,
)
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QFileDialog

from moltis_desktop.desktop.icons import app_icon

_SETTINGS_GEOMETRY = "chatWindow/geometry"


class _Page(QWebEnginePage):
    """Keeps the window on the gateway: any other address opens in the system browser."""

    def __init__(
        self,
        profile: QWebEngineProfile,
        origin: Callable[[], QUrl],
        parent: QObject | None,
        open_url: Callable[[QUrl], object],
    ) -> None:
        super().__init__(profile, parent)
        self._origin = origin
        self.open_url = open_url

    def _ours(self, url: QUrl) -> bool:
        origin = self._origin()
        return (
            url.scheme() in ("http", "https")
            and url.host() == origin.host()
            and url.port() == origin.port()
        )

    def acceptNavigationRequest(  # noqa: N802 - Qt's name
        self, url: QUrl | str, nav_type: QWebEnginePage.NavigationType, is_main_frame: bool
    ) -> bool:
        url = QUrl(url)
        if not is_main_frame or self._ours(url) or url.scheme() in ("about", "data", "blob"):
            return True
        self.open_url(url)
        return False

    def createWindow(self, kind: QWebEnginePage.WebWindowType) -> QWebEnginePage:  # noqa: N802
        # A link with target=_blank: catch its first navigation and hand it to the browser.
        return _ExternalCatcher(self.profile(), self, self.open_url)


class _ExternalCatcher(QWebEnginePage):
    def __init__(
        self, profile: QWebEngineProfile, parent: QObject, open_url: Callable[[QUrl], object]
    ) -> None:
        super().__init__(profile, parent)
        self.open_url = open_url

    def acceptNavigationRequest(  # noqa: N802 - Qt's name
        self, url: QUrl | str, nav_type: QWebEnginePage.NavigationType, is_main_frame: bool
    ) -> bool:
        self.open_url(QUrl(url))
        self.deleteLater()
        return False


class ChatWindow(QWebEngineView):
    """The web app in a window of its own; closing it only hides it."""

    ready = Signal()
    """The page has loaded (the chat may still be connecting)."""

    def __init__(
        self,
        base_url: Callable[[], str],
        mint_ticket: Callable[[], str],
        data_dir: Path,
        open_url: Callable[[QUrl], object] = QDesktopServices.openUrl,
    ):
        super().__init__()
        self._base_url = base_url
        self._mint_ticket = mint_ticket
        self.setWindowTitle("Moltis")
        self.setWindowIcon(app_icon())
        profile = QWebEngineProfile("moltis", self)
        profile.setPersistentStoragePath(str(data_dir / "webengine"))
        profile.setCachePath(str(data_dir / "webengine-cache"))
        profile.downloadRequested.connect(self._download)
        self._profile = profile
        self.setPage(_Page(profile, lambda: QUrl(self._base_url()), self, open_url))
        self.loaded = False
        self._pending_route: str | None = None
        self.loadFinished.connect(self._on_loaded)
        self._settings = QSettings(str(data_dir / "desktop.ini"), QSettings.Format.IniFormat)
        geometry = self._settings.value(_SETTINGS_GEOMETRY)
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1100, 760)

    # ------------------------------------------------------------------ navigation

    def open(self, route: str | None = None) -> None:
        """Show the window (loading the app, signed in, on first use) at `route`
        (`#/chat/<key>`, `#/config`, …)."""
        if not self.loaded:
            self._pending_route = route
            self.load(QUrl(f"{self._base_url()}/#ticket={self._mint_ticket()}"))
        elif route:
            self.go(route)
        self.show()
        self.raise_()
        self.activateWindow()

    def go(self, route: str) -> None:
        self.page().runJavaScript(f"location.hash = {json.dumps(route)};")

    def open_session(self, key: str) -> None:
        self.open(f"#/chat/{quote(key, safe='')}")

    def _on_loaded(self, ok: bool) -> None:
        if not ok:
            return
        self.loaded = True
        if self._pending_route:
            route, self._pending_route = self._pending_route, None
            # After the page has traded its ticket (it rewrites the hash to #/chat).
            self.page().runJavaScript(
                "new Promise(r => { const t = () => document.documentElement.dataset.ready"
                f" ? r(location.hash = {json.dumps(route)}) : setTimeout(t, 50); t(); }})"
            )
        self.ready.emit()

    # ------------------------------------------------------------------ downloads

    def _download(self, request: QWebEngineDownloadRequest) -> None:
        suggested = str(Path(request.downloadDirectory()) / request.downloadFileName())
        target, _ = QFileDialog.getSaveFileName(self, "Save file", suggested)
        if not target:
            request.cancel()
            return
        request.setDownloadDirectory(str(Path(target).parent))
        request.setDownloadFileName(Path(target).name)
        request.accept()

    # ------------------------------------------------------------------ window

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self._settings.setValue(_SETTINGS_GEOMETRY, self.saveGeometry())
        event.ignore()
        self.hide()

    def dispose(self) -> None:
        """Really close (at quit)."""
        self._settings.setValue(_SETTINGS_GEOMETRY, self.saveGeometry())
        self._settings.sync()
        page = self.page()
        self.setPage(None)  # type: ignore[arg-type]
        page.deleteLater()
        self.deleteLater()

    def run_js(self, source: str, callback: Callable[[object], None]) -> None:
        self.page().runJavaScript(source, 0, callback)
