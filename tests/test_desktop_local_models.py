"""The tray's Local Model submenu: the model the provider runs, the recommended download
from a loopback mirror, and its progress in the menu and the tooltip (Qt offscreen, the
real runtime and model manager)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PySide6.QtWidgets import QApplication, QMenu

from moltis_desktop.desktop.app import DesktopApp
from moltis_desktop.desktop.local_model_menu import progress_text
from moltis_desktop.gateway.methods.local_models import PROGRESS_EVENT
from moltis_desktop.providers.local_catalog import default_catalog
from tests.support.model_server import ModelServer
from tests.test_desktop import make_runtime, qt_run, running_app, until

GGUF = b"GGUF" + os.urandom(200_000)


def _local_menu(app: DesktopApp) -> QMenu:
    app.rebuild_menu()
    for action in app.menu.actions():
        if action.text() == "Local Model" and action.menu() is not None:
            menu = action.menu()
            assert isinstance(menu, QMenu)
            return menu
    raise AssertionError("no Local Model submenu")


def test_local_model_menu_downloads_the_recommended_model(
    qapp: QApplication, tmp_path: Path
) -> None:
    catalog = default_catalog()

    async def body() -> None:
        files = {}
        etags = {}
        for model_id in ("qwen2.5-coder-0.5b", "qwen2.5-1.5b"):
            key = f"{model_id}/{catalog[model_id].entry}"
            files[key], etags[key] = GGUF, hashlib.sha256(GGUF).hexdigest()
        server = await ModelServer(files, etags=etags).start()
        try:
            runtime = make_runtime(tmp_path / "home", MOLTIS_MODEL_MIRROR=server.mirror)
            async with running_app(qapp, runtime) as app:
                gw = app.gateway_state
                assert gw is not None and gw.local_models is not None
                manager = gw.local_models
                recommended = catalog[manager.recommended()]
                menu = _local_menu(app)
                texts = [a.text() for a in menu.actions() if not a.isSeparator()]
                assert texts[0] in ("No local model installed",
                                    "Running: SmolLM2 135M Instruct (built in)")  # fmt: skip
                label = f"Download {recommended.title} ("
                download = next(a for a in menu.actions() if a.text().startswith(label))

                # The progress of a download shows in the tooltip and the menu.
                assert app.local_model_menu is not None
                app.local_model_menu.on_event(PROGRESS_EVENT, {
                    "id": recommended.id, "done": 50, "total": 100, "state": "downloading",
                })  # fmt: skip
                assert progress_text(recommended.title, 50, 100) in app.tray.toolTip()
                assert "50%" in app.tray.toolTip()
                texts = [a.text() for a in _local_menu(app).actions()]
                assert progress_text(recommended.title, 50, 100) in texts
                app.local_model_menu.progress.clear()

                download.trigger()

                async def installed() -> bool:
                    return manager.status(recommended.id).state == "downloaded" and not (
                        manager.downloading
                    )

                await until(installed)

                async def settled() -> bool:
                    return "Downloading" not in app.tray.toolTip()

                await until(settled)
                path = manager.path(recommended.id)
                assert path is not None
                assert path.read_bytes() == GGUF
                texts = [a.text() for a in _local_menu(app).actions()]
                assert texts[0] == f"Running: {recommended.title}"
                assert not any(t.startswith(label) for t in texts)
        finally:
            await server.close()

    qt_run(qapp, body())
