"""The in-process `Canvas` (moltis_desktop/tools/canvas.py) the agent's `canvas` tool
drives: present, hide, navigate, eval, snapshot, on the canvas window. It stands in for a
node's canvas until nodes arrive. Pages open at a capability URL the gateway mints
in-process each time (gateway/canvas_access.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QUrl

if TYPE_CHECKING:
    from moltis_desktop.desktop.canvas_window import CanvasWindow


class DesktopCanvas:
    """The `Canvas` of moltis_desktop/tools/canvas.py, on a CanvasWindow (made on first
    use)."""

    def __init__(
        self, page_url: Callable[[str], str], folder: Callable[[], Path], data_dir: Path
    ) -> None:
        self._page_url = page_url
        """A new capability URL of a page, given its quoted path in the canvas folder."""
        self._folder = folder
        self._data_dir = data_dir
        self._window: CanvasWindow | None = None

    @property
    def folder(self) -> Path:
        return self._folder()

    def window(self) -> CanvasWindow:
        if self._window is None:
            from moltis_desktop.desktop.canvas_window import CanvasWindow

            self._window = CanvasWindow(self._data_dir)
        return self._window

    async def _load(self, url: str) -> str:
        window = self.window()
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def finished(ok: bool) -> None:
            if not done.done():
                done.set_result(ok)

        window.loadFinished.connect(finished)
        try:
            window.load(QUrl(url))
            window.show()
            window.raise_()
            ok = await asyncio.wait_for(done, 20)
        finally:
            window.loadFinished.disconnect(finished)
        if not ok:
            raise RuntimeError(f"the canvas could not load {url}")
        return url

    async def present(self, path: str = "index.html") -> str:
        return await self._load(self._page_url(quote(path.lstrip("/"))))

    async def navigate(self, url: str) -> str:
        return await self._load(url)

    async def hide(self) -> None:
        if self._window is not None:
            self._window.hide()

    async def eval(self, script: str) -> Any:
        window = self.window()
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def got(value: Any) -> None:
            if not result.done():
                result.set_result(value)

        window.page().runJavaScript(script, 0, got)
        return await asyncio.wait_for(result, 15)

    async def snapshot(self) -> bytes:
        window = self.window()
        if not window.isVisible():
            raise RuntimeError("the canvas is hidden: present a page first")
        await asyncio.sleep(0.15)  # let the last paint land
        image = window.grab().toImage()
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")  # type: ignore[call-overload]  # the stubs say bytes; only str works
        buffer.close()
        return bytes(data.data())

    def dispose(self) -> None:
        if self._window is not None:
            page = self._window.page()
            self._window.setPage(None)  # type: ignore[arg-type]
            page.deleteLater()
            self._window.deleteLater()
            self._window = None
