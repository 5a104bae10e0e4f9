"""The tray's Local Model submenu: the model the provider runs, the recommended download
from a loopback mirror, and its progress in the menu and the tooltip; the set-up dialog's
local model (no account needed: the catalog with sizes, a download with a progress bar, a
failed one offering the built-in model). Qt offscreen, the real runtime and model manager."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PySide6.QtWidgets import QApplication, QMenu

from moltis_desktop.desktop.app import DesktopApp
from moltis_desktop.desktop.local_model_menu import progress_text
from moltis_desktop.gateway.methods.local_models import PROGRESS_EVENT
from moltis_desktop.providers.local_catalog import BUILTIN_MODEL, default_catalog
from tests.support.browser import widget_shot
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


def test_onboarding_dialog_offers_the_local_model_and_downloads_it(
    qapp: QApplication, tmp_path: Path
) -> None:
    catalog = default_catalog()
    good, bad = "qwen2.5-0.5b", "llama-3.2-1b"

    async def body() -> None:
        sha = hashlib.sha256(GGUF).hexdigest()
        files = {f"{m}/{catalog[m].entry}": GGUF for m in (good, bad)}
        etags = {f"{good}/{catalog[good].entry}": sha, f"{bad}/{catalog[bad].entry}": "0" * 64}
        server = await ModelServer(files, etags=etags).start()
        try:
            runtime = make_runtime(
                tmp_path / "home",
                MOLTIS_MODEL_MIRROR=server.mirror,
                OLLAMA_HOST="http://127.0.0.1:9",  # nothing answers there
            )
            async with running_app(qapp, runtime) as app:
                # Nothing is set up: the dialog opens by itself, the local model first.
                dialog = app._onboarding
                assert dialog is not None and dialog.isVisible()
                assert app._onboarding_load is not None
                await app._onboarding_load
                assert dialog.provider.itemData(0) == "local"
                assert "no account needed" in dialog.provider.itemText(0)
                assert "Built in: SmolLM2 135M Instruct" in dialog.detail.text()
                # No key, no address, no connection test: the models are there at once.
                assert not dialog.key.isVisibleTo(dialog)
                assert not dialog.test.isVisibleTo(dialog)
                items = {
                    dialog.model.itemData(i): dialog.model.itemText(i)
                    for i in range(dialog.model.count())
                }
                assert items[BUILTIN_MODEL].startswith("SmolLM2 135M Instruct, built in")
                assert items[good] == "Qwen2.5 0.5B Instruct, 491 MB download"
                recommended = app.gateway_state.local_models.recommended()  # type: ignore[union-attr]
                assert dialog.model.currentData() == recommended
                assert "(recommended)" in dialog.model.currentText()
                assert dialog.save_button.isEnabled()
                widget_shot(dialog, "onboarding-local")

                # A download refused (the mirror states another hash): the reason, what to
                # do, and the built-in model offered; nothing saved.
                dialog.model.setCurrentIndex(dialog.model.findData(bad))
                assert dialog.save_button.text() == "Download (808 MB) and Save"
                dialog.save_button.click()
                assert dialog._download is not None
                await dialog._download
                assert "the download of Llama 3.2 1B Instruct failed" in dialog.status.text()
                assert "checksum mismatch" in dialog.status.text()
                assert "use the built-in model" in dialog.status.text()
                assert dialog.use_builtin.isVisibleTo(dialog)
                assert dialog.isVisible() and dialog.save_button.isEnabled()
                widget_shot(dialog, "onboarding-local-failed")
                assert "local" not in runtime.paths.config_file.read_text(encoding="utf-8")

                # Another model: downloaded with the progress bar, then saved.
                dialog.model.setCurrentIndex(dialog.model.findData(good))
                seen: list[int] = []
                dialog.progress.valueChanged.connect(seen.append)
                dialog.save_button.click()
                assert dialog.progress.isVisibleTo(dialog)
                assert not dialog.model.isEnabled()  # busy while downloading
                assert "Downloading Qwen2.5 0.5B Instruct (491 MB)" in dialog.status.text()
                widget_shot(dialog, "onboarding-local-downloading")
                await dialog._download
                assert seen and seen[-1] == 1000
                assert not dialog.isVisible()
                manager = app.gateway_state.local_models  # type: ignore[union-attr]
                path = manager.path(good)
                assert path is not None and path.read_bytes() == GGUF
                config = runtime.paths.config_file.read_text(encoding="utf-8")
                assert "[providers.local]" in config
                assert f'model = "local/{good}"' in config
                assert not app.first_run()

                # Rerun: the built-in model, saved at once with no download.
                requests = len(server.requests)
                dialog = app.open_onboarding()
                assert app._onboarding_load is not None
                await app._onboarding_load
                assert "Qwen2.5 0.5B Instruct<br>" in dialog.detail.text()  # installed now
                dialog.model.setCurrentIndex(dialog.model.findData(BUILTIN_MODEL))
                assert dialog.save_button.text() == "Save"
                dialog.save_button.click()
                assert not dialog.isVisible()
                assert len(server.requests) == requests
                config = runtime.paths.config_file.read_text(encoding="utf-8")
                assert f'model = "local/{BUILTIN_MODEL}"' in config
        finally:
            await server.close()

    qt_run(qapp, body())
