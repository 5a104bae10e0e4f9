"""The tray app, offscreen: the real Runtime on a qasync loop, the tray menu, the chat
window (QtWebEngine) on the web app, single instance, start at login, quit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

from PySide6.QtCore import QUrl
from PySide6.QtWidgets import QApplication, QPushButton

from moltis_desktop.desktop.app import DesktopApp, prepare_qt
from moltis_desktop.desktop.autostart import Autostart
from moltis_desktop.desktop.single import SingleInstance
from moltis_desktop.runtime import Runtime
from tests.support.browser import widget_shot
from tests.support.fake_llm import FakeLLM, Turn, agent_config

prepare_qt()
pytestmark = pytest.mark.xdist_group("qt")

T = TypeVar("T")
TOKEN = "desktop-test-token-123"


def qt_run(qapp: QApplication, coro: Awaitable[T], timeout: float = 90) -> T:
    import qasync

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def make_runtime(home: Path, config: str = "", **env: str) -> Runtime:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "moltis.toml").write_text(config, encoding="utf-8")
    full = {"MOLTIS_HOME": str(home), "HOME": str(home), "MOLTIS_TOKEN": TOKEN, **env}
    return Runtime(env=full, overrides={"gateway": {"port": 0}}, console=None, prompt=None)


@contextlib.asynccontextmanager
async def running_app(qapp: QApplication, runtime: Runtime) -> AsyncIterator[DesktopApp]:
    """The tray app on `runtime`, started, and shut down when the block ends."""
    app = DesktopApp(qapp, runtime, autostart=Autostart(env=runtime.env))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


async def js(window: Any, source: str) -> Any:
    """Run JavaScript in the chat window's page and get its result."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    window.run_js(source, lambda value: future.done() or future.set_result(value))
    return await asyncio.wait_for(future, 10)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


def test_tray_menu_chat_window_streams_and_quit(qapp: QApplication, tmp_path: Path) -> None:
    opened: list[QUrl] = []

    async def body() -> None:
        async with FakeLLM() as fake:
            runtime = make_runtime(
                tmp_path / "home", agent_config("anthropic", fake), FAKE_LLM_KEY="k"
            )
            app = DesktopApp(
                qapp, runtime, autostart=Autostart(env=runtime.env), open_url=opened.append
            )
            await app.start()
            await runtime.agent_ready()
            gw = app.gateway_state
            assert gw is not None
            assert app.tray.isVisible()
            assert app.tray.toolTip() == "Moltis: ready"

            # The menu says how things are, and is rebuilt each time it opens.
            texts = [a.text() for a in app.menu.actions() if not a.isSeparator()]
            app.rebuild_menu()
            texts = [a.text() for a in app.menu.actions() if not a.isSeparator()]
            assert texts[0].startswith(f"Gateway ready · 127.0.0.1:{gw.port}")
            assert texts[1:] == [
                "Open Chat",
                "Canvas",
                "New Chat",
                "Recent Sessions",
                "Voice",
                "Local Model",
                "Pair a Phone…",
                "Set Up a Provider…",
                "Settings…",
                "Open Logs Folder",
                "Start at Login",
                "About Moltis",
                "Quit Moltis",
            ]

            # Open Chat: the web app, signed in without a token in the URL, streams a reply.
            fake.script(Turn(text="Hello from the **tray**", chunks=4, delay_s=0.05))
            app.action("Open Chat").trigger()
            window = app.chat_window()
            assert window.isVisible()

            async def ready() -> bool:
                return await js(window, "document.documentElement.dataset.ready || ''") == "chat"

            await until(ready)
            url = await js(window, "location.href")
            assert "ticket" not in url and TOKEN not in url
            await js(
                window,
                "(() => { const t = document.querySelector('[data-testid=composer]');"
                " const set = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype,"
                " 'value').set; set.call(t, 'hi from Qt'); t.dispatchEvent(new Event('input',"
                " {bubbles: true})); })()",
            )

            async def enabled() -> bool:
                return await js(window, "!document.querySelector('[data-testid=send]').disabled")

            await until(enabled)
            await js(window, "document.querySelector('[data-testid=send]').click()")

            async def replied() -> bool:
                text = await js(
                    window,
                    "(document.querySelector('[data-testid=msg-assistant] strong') || {})"
                    ".textContent || ''",
                )
                return text == "tray"

            await until(replied)
            assert app.state == "idle"  # the run is over
            assert widget_shot(window, "chat-window").stat().st_size > 10_000
            app.rebuild_menu()
            widget_shot(app.menu, "tray-menu")

            # Other addresses open in the system browser; the window stays on the gateway.
            await js(window, "location.href = 'https://example.com/docs'")
            await until(_opened(opened, "https://example.com/docs"))
            await js(window, "window.open('https://example.org/new', '_blank')")
            await until(_opened(opened, "https://example.org/new"))
            assert (await js(window, "location.origin")) == gw.url.replace("ws://", "http://")

            # Recent Sessions lists the chat; New Chat opens a fresh one.
            app.rebuild_menu()
            recent = app.action("Main chat")
            assert recent is not None
            app.action("New Chat").trigger()

            async def fresh() -> bool:
                return "web-" in await js(window, "location.hash")

            await until(fresh)

            # Settings: native settings, and the way into the web app's config view.
            app.action("Settings…").trigger()
            dialog = app.open_settings()
            assert dialog.isVisible()
            widget_shot(dialog, "settings")
            assert dialog.notify.isChecked() and app.notify_replies
            dialog.notify.setChecked(False)
            assert not app.notify_replies
            dialog.notify.setChecked(True)
            # A global shortcut needs an X server (offscreen here has none): it says so.
            assert "not available here" in (app.set_shortcut("Ctrl+Alt+M") or "")
            assert "not a usable shortcut" in (app.set_shortcut("Ctrl+Alt") or "")
            assert app.set_shortcut("") is None and app.shortcut_text == ""
            [config] = [
                b for b in dialog.findChildren(QPushButton) if b.text().startswith("Models")
            ]
            config.click()

            async def settings() -> bool:
                return await js(window, "location.hash") == "#/config"

            await until(settings)
            [voice] = [b for b in dialog.findChildren(QPushButton) if b.text().startswith("Voice")]
            voice.click()

            async def voice_page() -> bool:
                return await js(window, "location.hash") == "#/voice"

            await until(voice_page)
            app.action("Open Logs Folder").trigger()
            assert opened[-1].toLocalFile() == str(runtime.paths.log_dir)

            # A reply that ends while the window is hidden becomes a notification; clicking
            # it opens that session.
            window.close()
            assert not window.isVisible()
            fake.script(Turn(text="Done while you were away"))
            res = await _send(gw, "agent:main:away", "work on it")
            assert res
            await until(_has(app), 20)
            note = app.notifications[-1]
            assert note.session_key == "agent:main:away"
            assert "Done while you were away" in note.text
            app.tray.messageClicked.emit()
            assert window.isVisible()

            async def away() -> bool:
                return await js(window, "location.hash") == "#/chat/agent%3Amain%3Aaway"

            await until(away)

            # A provider failure turns the icon to "error" until a reply goes through.
            fake.script(Turn(error=401), Turn(text="better now"))
            await _send(gw, "agent:main:main", "this will fail")
            await until(_state(app, "error"), 20)
            assert "401" in app.tray.toolTip() or "key" in app.tray.toolTip().lower()
            await _send(gw, "agent:main:main", "and this works")
            await until(_state(app, "idle"), 20)

            # About shows a box with the version.
            box = app.show_about()
            assert "Moltis Desktop" in box.text()
            widget_shot(box, "about")
            box.close()

            # The window's place and size are remembered for next time.
            window.setGeometry(40, 50, 700, 500)
            window.close()
            geometry = window.geometry()

            # Quit: the port is free again and the sessions are on disk.
            port = gw.port
            app.action("Quit Moltis").trigger()
            assert app._quit.is_set()
            await app.shutdown()
            with socket.socket() as probe:  # as a new gateway would bind it
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", port))
                probe.listen()
            index = (tmp_path / "home").rglob("sessions.json")
            assert any("agent:main:main" in p.read_text() for p in index)
            from moltis_desktop.desktop.chat_window import ChatWindow

            again = ChatWindow(lambda: "http://127.0.0.1:1", lambda: "t", runtime.paths.state_dir)
            assert again.geometry().size() == geometry.size()
            assert again.geometry().topLeft() == geometry.topLeft()
            again.dispose()

    qt_run(qapp, body())


def _opened(opened: list[QUrl], url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(u.toString() == url for u in opened)

    return check


def _state(app: DesktopApp, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return app.state == state

    return check


def _has(app: DesktopApp) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(app.notifications)

    return check


async def _send(gw: Any, key: str, text: str) -> bool:
    from moltis_desktop.agent.ask import submit

    turn = await submit(gw.agent.chat, text, session_key=key, run_id=f"run-{key}")
    turn.close()
    return turn.run is not None


def test_start_at_login_writes_and_removes_the_autostart_entry(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def body() -> None:
        runtime = make_runtime(tmp_path / "home")
        autostart = Autostart(env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "x")})
        app = DesktopApp(qapp, runtime, autostart=autostart)
        await app.start()
        try:
            action = app.action("Start at Login")
            assert action.isCheckable() and not action.isChecked()
            action.trigger()
            entry = tmp_path / "x" / "autostart" / "moltis-desktop.desktop"
            text = entry.read_text(encoding="utf-8")
            assert "Exec=" in text and "moltis_desktop.desktop.launcher" in text
            assert app.action("Start at Login").isChecked()
            app.action("Start at Login").trigger()
            assert not entry.exists()
        finally:
            await app.shutdown()

    qt_run(qapp, body())


def test_autostart_on_macos_is_a_launch_agent(tmp_path: Path) -> None:
    auto = Autostart(platform="darwin", env={"HOME": str(tmp_path)}, command=["/app/moltis"])
    auto.enable()
    import plistlib

    plist = plistlib.loads(auto.path.read_bytes())
    assert plist["ProgramArguments"] == ["/app/moltis"] and plist["RunAtLoad"] is True
    assert auto.enabled()
    auto.disable()
    assert not auto.enabled()


def test_single_instance_hands_over_to_the_first(qapp: QApplication) -> None:
    received: list[str] = []
    name = f"moltis-test-{os.getpid()}-{time.monotonic_ns()}"
    first = SingleInstance(name, received.append)
    assert first.claim()

    async def body() -> None:
        second = SingleInstance(name, lambda m: None)
        assert not second.claim("show")

        async def got() -> bool:
            return received == ["show"]

        await until(got, 5)

    try:
        qt_run(qapp, body())
    finally:
        first.release()
    # Once released, the name can be claimed again.
    again = SingleInstance(name, lambda m: None)
    assert again.claim()
    again.release()


def test_second_launch_exits_and_first_keeps_running(tmp_path: Path) -> None:
    """Two real `moltis-desktop` processes (offscreen): the second says so and exits 0."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "moltis.toml").write_text("[gateway]\nport = 0\n", encoding="utf-8")
    env = {
        **os.environ,
        "MOLTIS_HOME": str(home),
        "HOME": str(home),
        "MOLTIS_TOKEN": TOKEN,
        "QT_QPA_PLATFORM": "offscreen",
    }
    env.pop("DISPLAY", None)
    cmd = [sys.executable, "-m", "moltis_desktop.desktop.launcher"]
    first = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        log = home / "logs" / "moltis.log"
        deadline = time.monotonic() + 30
        while not (log.exists() and "tray app ready" in log.read_text(encoding="utf-8")):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first app did not start"
            time.sleep(0.1)
        second = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert second.returncode == 0
        assert "already running" in second.stdout
        assert first.poll() is None  # still there
    finally:
        first.terminate()  # SIGTERM quits as the menu does
        out = first.communicate(timeout=30)[0]
    assert first.returncode == 0, out
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert any(r.get("message") == "gateway stopped" for r in records)


def test_onboarding_dialog_tests_the_key_and_stores_it_in_the_keyring(
    qapp: QApplication, tmp_path: Path, memory_keyring: Any
) -> None:
    key = "sk-ant-from-the-dialog-0123"

    async def body() -> None:
        async with FakeLLM() as fake:
            fake.api_key = key
            runtime = make_runtime(
                tmp_path / "home",
                "",
                PYTHON_KEYRING_BACKEND="tests.support.keyrings.MemoryKeyring",
                OLLAMA_HOST="http://127.0.0.1:9",  # nothing answers there
            )
            app = DesktopApp(qapp, runtime, autostart=Autostart(env=runtime.env))
            await app.start()
            try:
                # Nothing is set up: the dialog opens by itself.
                dialog = app._onboarding
                assert dialog is not None and dialog.isVisible()
                assert app._onboarding_load is not None
                await app._onboarding_load
                # No Ollama running: the local model first, then the cloud providers.
                assert dialog.provider.itemData(0) == "local"
                assert dialog.provider.itemData(1) == "anthropic"
                dialog.provider.setCurrentIndex(1)
                assert dialog.key.isVisibleTo(dialog) and dialog.test.isVisibleTo(dialog)
                assert dialog.save_button.text() == "Save"
                widget_shot(dialog, "onboarding")
                dialog.key.setText("sk-wrong")
                dialog.base_url.setText(fake.anthropic_base_url)
                await dialog.run_test()
                assert "connection test failed" in dialog.status.text()
                assert not dialog.save_button.isEnabled()
                dialog.key.setText(key)
                await dialog.run_test()
                assert dialog.save_button.isEnabled()
                assert [dialog.model.itemText(i) for i in range(dialog.model.count())] == [
                    "fake-model-1",
                    "fake-model-2",
                ]
                dialog.model.setCurrentText("fake-model-2")
                dialog.name.setText("Ada")
                widget_shot(dialog, "onboarding-tested")
                dialog.save_button.click()
                assert not dialog.isVisible()
                config = runtime.paths.config_file.read_text(encoding="utf-8")
                assert key not in config
                assert 'model = "anthropic/fake-model-2"' in config
                assert 'name = "Ada"' in config
                assert memory_keyring.get_password("moltis-desktop", "anthropic-api-key") == key
                assert not app.first_run()
                # Rerunnable from the menu.
                app.action("Set Up a Provider…").trigger()
                assert app._onboarding is not None and app._onboarding.isVisible()
            finally:
                await app.shutdown()

    qt_run(qapp, body())


def test_a_taken_port_is_reported_and_another_offered(qapp: QApplication, tmp_path: Path) -> None:
    async def body() -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            runtime = make_runtime(tmp_path / "home", "[providers.ollama]\n")
            runtime.overrides = {"gateway": {"port": taken}}
            app = DesktopApp(qapp, runtime, autostart=Autostart(env=runtime.env))
            starting = asyncio.ensure_future(app.start())

            async def asked() -> bool:
                return app.port_question is not None and app.port_question.isVisible()

            await until(asked, 20)
            box = app.port_question
            assert box is not None
            assert f"{taken}" in box.text() and "in use" in box.text().lower()
            assert app.state == "error"
            widget_shot(box, "port-in-use")
            (use,) = [b for b in box.buttons() if b.text().startswith("Use port")]
            offered = int(use.text().rsplit(" ", 1)[1])
            use.click()
            await starting
            try:
                assert app.gateway is not None and app.gateway.state.port == offered != taken
                assert app.state == "idle"
            finally:
                await app.shutdown()

    qt_run(qapp, body())


def test_the_agent_presents_evaluates_and_snapshots_the_canvas(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def body() -> None:
        async with FakeLLM() as fake:
            runtime = make_runtime(
                tmp_path / "home", agent_config("anthropic", fake), FAKE_LLM_KEY="k"
            )
            app = DesktopApp(qapp, runtime, autostart=Autostart(env=runtime.env))
            await app.start()
            try:
                await runtime.agent_ready()
                canvas = app.canvas
                assert canvas is not None
                folder = canvas.folder
                folder.mkdir(parents=True)
                (folder / "index.html").write_text(
                    "<html><head><title>Agent page</title></head>"
                    "<body style='background:#1e6f5c;color:#fff'><h1 id=h>Quarterly sales</h1>"
                    "</body></html>"
                )
                fake.script(
                    Turn(tool_calls=[("canvas", {"action": "present", "path": "index.html"})]),
                    Turn(tool_calls=[("canvas", {"action": "eval", "script": "document.title"})]),
                    Turn(tool_calls=[("canvas", {"action": "snapshot"})]),
                    Turn(text="Here it is."),
                )
                gw = app.gateway_state
                assert gw is not None
                await _send(gw, "agent:main:main", "show me the sales page")

                async def answered() -> bool:
                    return len([r for r in fake.requests if r.method == "POST"]) >= 4

                await until(answered, 30)
                results = _tool_results(fake)
                assert "Agent page" in results[1]
                snapshot = json.loads(results[2])
                png = Path(snapshot["png"])
                data = png.read_bytes()  # noqa: ASYNC240 - a small file, in a test
                assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) == snapshot["bytes"] > 2000
                window = canvas.window()
                assert window.isVisible()
                widget_shot(window, "canvas")
                # Live reload: the agent rewrites the page, the window shows the new one.
                (folder / "index.html").write_text(
                    "<html><body><h1 id=h>Updated</h1></body></html>"
                )

                async def reloaded() -> bool:
                    text = await canvas.eval("(document.getElementById('h')||{}).textContent")
                    return text == "Updated"

                await until(reloaded, 15)
                # The tray's Canvas item shows it again after it is hidden.
                await canvas.hide()
                assert not window.isVisible()
                app.action("Canvas").trigger()

                async def shown() -> bool:
                    return window.isVisible()

                await until(shown, 10)
            finally:
                await app.shutdown()

    qt_run(qapp, body())


def _tool_results(fake: FakeLLM) -> list[str]:
    """The tool results the model was sent, in order (Anthropic's wire shape)."""
    body = [r for r in fake.requests if r.method == "POST"][-1].body
    out = []
    for message in body["messages"]:
        if message["role"] != "user" or isinstance(message["content"], str):
            continue
        for block in message["content"]:
            if block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(c.get("text", "") for c in content)
                out.append(str(content))
    return out


def test_shortcut_text_becomes_a_pynput_hot_key() -> None:
    from moltis_desktop.desktop.shortcut import to_pynput

    assert to_pynput("Ctrl+Alt+M") == "<ctrl>+<alt>+m"
    assert to_pynput("Meta+Shift+F5") == "<cmd>+<shift>+<f5>"
    with pytest.raises(ValueError, match="besides the modifiers"):
        to_pynput("Ctrl+Shift")


def test_a_pairing_request_asks_for_attention_and_is_approved_from_the_tray(
    qapp: QApplication, tmp_path: Path
) -> None:
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.support.schema import FrameValidator
    from tests.support.wsclient import ProtoClient

    async def body() -> None:
        runtime = make_runtime(
            tmp_path / "home",
            "[providers.ollama]\n[gateway]\nauto_approve_loopback_devices = false\n",
        )
        app = DesktopApp(qapp, runtime, autostart=Autostart(env=runtime.env))
        await app.start()
        gw = app.gateway_state
        assert gw is not None
        key = Ed25519PrivateKey.generate()
        try:
            async with aiohttp.ClientSession() as http:

                async def phone_connect() -> dict[str, Any]:
                    client = ProtoClient(http, gw.url, FrameValidator())
                    res = await client.connect_signed(
                        key, secret=TOKEN, token=TOKEN, scopes=["operator.read"]
                    )
                    await client.close()
                    return res

                res = await phone_connect()
                assert res["error"]["code"] == "NOT_PAIRED"
                assert app.state == "attention"
                assert "wants to pair" in app.tray.toolTip()
                approve = app.action("Approve cli as operator")
                widget_shot(app.menu, "tray-menu-pairing")
                approve.trigger()
                assert app.state == "idle"
                assert (await phone_connect())["ok"]
                app.rebuild_menu()
                assert not any(a.text().startswith("Pairing Requests") for a in app.menu.actions())
        finally:
            await app.shutdown()

    qt_run(qapp, body())
