"""The tray app: the gateway (the same `Runtime` the headless command runs) on a qasync
loop, a tray icon whose menu is rebuilt each time it opens, and the chat window.

QtWebEngine is imported only when a window first opens, so an app that stays in the tray
costs what the gateway and Qt's widgets cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QObject, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QApplication, QMenu, QMessageBox, QSystemTrayIcon

from moltis_desktop import __version__
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.paths import private_dir
from moltis_desktop.desktop.autostart import Autostart
from moltis_desktop.desktop.icons import app_icon
from moltis_desktop.desktop.notifications import Notification, Notifier
from moltis_desktop.desktop.tray_menu import TrayMenu
from moltis_desktop.runtime import Runtime

if TYPE_CHECKING:
    from moltis_desktop.desktop.canvas import DesktopCanvas
    from moltis_desktop.desktop.chat_window import ChatWindow
    from moltis_desktop.desktop.local_model_menu import LocalModelMenu
    from moltis_desktop.desktop.node_bridge import DesktopNode
    from moltis_desktop.desktop.onboarding_dialog import OnboardingDialog
    from moltis_desktop.desktop.pair_dialog import PairDialog
    from moltis_desktop.desktop.settings_dialog import SettingsDialog
    from moltis_desktop.desktop.voice_menu import VoiceMenu
    from moltis_desktop.gateway.server import GatewayServer
    from moltis_desktop.gateway.state import GatewayState

_LOGGER = logging.getLogger(__name__)

STATES = {
    "idle": "ready",
    "working": "replying",
    "listening": "listening",
    "speaking": "speaking",
    "attention": "waiting for you",
    "error": "needs attention",
}


class DesktopApp(QObject):
    """Owns the runtime, the tray icon and the windows."""

    def __init__(
        self,
        qapp: QApplication,
        runtime: Runtime,
        *,
        autostart: Autostart | None = None,
        open_url: Callable[[QUrl], object] = QDesktopServices.openUrl,
    ) -> None:
        super().__init__()
        self.qapp = qapp
        qapp.setQuitOnLastWindowClosed(False)  # the tray icon lives on
        self.open_url = open_url
        """Opens a folder or page outside the app (the file manager, the browser)."""
        self.runtime = runtime
        self.autostart = autostart or Autostart(env=runtime.env)
        self.gateway: GatewayServer | None = None
        self.state = "idle"
        self.error = ""
        self.running: set[str] = set()
        self.exit_code = 0
        self._chat: ChatWindow | None = None
        self._settings_dialog: SettingsDialog | None = None
        self._pair_dialog: PairDialog | None = None
        private_dir(runtime.paths.state_dir)
        self.prefs = QSettings(
            str(runtime.paths.state_dir / "desktop.ini"), QSettings.Format.IniFormat
        )
        """The app's own preferences (not the gateway's config)."""
        from moltis_desktop.desktop.shortcut import GlobalShortcut

        self.shortcut = GlobalShortcut(self.open_chat)
        self.canvas: DesktopCanvas | None = None
        """What the agent's `canvas` tool and the node's canvas.* commands drive."""
        self._canvas_shown: asyncio.Future[str] | None = None
        self.node: DesktopNode | None = None
        """The app's own node connection to its gateway (canvas.*, system.notify)."""
        self.port_question: QMessageBox | None = None
        self._onboarding: OnboardingDialog | None = None
        self._onboarding_load: asyncio.Future[None] | None = None
        self.ollama_url = runtime.env.get("OLLAMA_HOST", "http://127.0.0.1:11434")
        self._quit = asyncio.Event()
        self.voice_menu: VoiceMenu | None = None
        self.local_model_menu: LocalModelMenu | None = None
        self.tray = QSystemTrayIcon(app_icon(), self)
        self.tray_menu = TrayMenu(self)
        self.tray.setContextMenu(self.tray_menu.menu)
        self.tray.activated.connect(self._activated)
        self.notifier = Notifier(
            self.tray, self.prefs, open_chat=self.open_chat, chat_in_front=self._chat_in_front
        )
        self.rebuild_menu()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start the gateway and show the tray icon. When its port is taken, say so and
        offer a free one."""
        while True:
            try:
                self.gateway = await self.runtime.start()
                break
            except MoltisError as exc:
                self._set_state("error", exc.message)
                self.tray.show()
                self.notifier.message("Moltis could not start", exc.message, state="error")
                if not exc.message.startswith("cannot listen"):
                    raise
                with contextlib.suppress(Exception):
                    await self.runtime.stop()
                port = _free_port()
                if not await self.ask_other_port(exc.message, port):
                    raise
                gateway = dict(self.runtime.overrides.get("gateway") or {})
                self.runtime.overrides["gateway"] = {**gateway, "port": port}
        state = self.gateway.state
        state.events.listeners.append(self._on_event)
        from moltis_desktop.desktop.voice_menu import VoiceMenu

        self.voice_menu = VoiceMenu(
            state,
            set_tray_state=self._voice_state,
            notify=lambda title, text: self.notifier.message(title, text, msecs=8000),
        )
        self.voice_menu.start()
        from moltis_desktop.desktop.local_model_menu import LocalModelMenu

        self.local_model_menu = LocalModelMenu(
            state,
            show_progress=self._download_tip,
            notify=lambda title, text: self.notifier.message(title, text, msecs=8000),
        )
        self.local_model_menu.start()
        self._set_state("idle")
        self.tray.show()
        if self.first_run():
            self.open_onboarding()
        self._attach_canvas(state)
        self._start_node()
        problem = self.set_shortcut(self.shortcut_text)
        if problem:
            _LOGGER.warning("%s", problem)
        _LOGGER.info("tray app ready: %s", self.gateway.url)

    async def run(self) -> int:
        """Start, run until Quit (or SIGTERM / logout), then shut down."""
        try:
            await self.start()
        except MoltisError as exc:
            return exc.exit_code
        await self._quit.wait()
        await self.shutdown()
        return self.exit_code

    async def ask_other_port(self, problem: str, port: int) -> bool:
        """Ask (without blocking the loop) whether to use `port` instead."""
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Moltis: port in use",
            f"{problem}\n\nStart on port {port} instead (for this run)? To keep it, set "
            "gateway.port in Settings.",
        )
        use = box.addButton(f"Use port {port}", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def clicked(button: object) -> None:
            if not answer.done():
                answer.set_result(button is use)

        box.buttonClicked.connect(clicked)
        box.setModal(False)
        self.port_question = box
        box.show()
        try:
            return await answer
        finally:
            self.port_question = None
            box.deleteLater()

    def request_quit(self) -> None:
        self._quit.set()

    async def shutdown(self) -> None:
        """Stop taking work, end the runs, send `shutdown` (clients close with 1012),
        flush sessions, remove the tray icon and the windows."""
        listeners = self.gateway_state.events.listeners if self.gateway_state is not None else []
        if self._on_event in listeners:
            listeners.remove(self._on_event)
        if self.voice_menu is not None:
            self.voice_menu.stop()
        if self.local_model_menu is not None:
            self.local_model_menu.stop()
        if self.node is not None:
            await self.node.stop()
            self.node = None
        await self.runtime.stop()
        if self._chat is not None:
            self._chat.dispose()
            self._chat = None
        if self._onboarding is not None:
            self._onboarding.close()
        if self._settings_dialog is not None:
            self._settings_dialog.close()
        if self._pair_dialog is not None:
            self._pair_dialog.close()
        self.shortcut.stop()
        if self.canvas is not None:
            self.canvas.dispose()
            self.canvas = None
        self.tray.hide()

    # ------------------------------------------------------------------ state

    def _set_state(self, state: str, error: str = "") -> None:
        self.state, self.error = state, error
        self.tray.setIcon(app_icon(state))
        tip = f"Moltis: {STATES[state]}"
        if error:
            tip += f" ({error})"
        self.tray.setToolTip(tip)

    def _download_tip(self, text: str) -> None:
        """A model download's progress in the tooltip ("" puts the state's back)."""
        self._set_state(self.state, self.error)
        if text:
            self.tray.setToolTip(f"{self.tray.toolTip()}\n{text}")

    def _voice_state(self, state: str, error: str) -> None:
        """The voice loop's state on the tray icon; replies and pairing keep theirs."""
        if state == "idle" and self.state in ("listening", "speaking"):
            self._set_state("working" if self.running else "idle")
        elif state in ("listening", "speaking") and self.state in (
            "idle",
            "working",
            "listening",
            "speaking",
        ):
            self._set_state(state)
        elif state == "error":
            self._set_state("error", error)

    def _on_event(self, event: str, payload: Any) -> None:
        if self._pair_dialog is not None and self._pair_dialog.isVisible():
            self._pair_dialog.on_event(event, payload)
        if event == "agent" and isinstance(payload, dict) and payload.get("stream") == "lifecycle":
            phase = (payload.get("data") or {}).get("phase")
            if phase == "start":
                self.running.add(payload["runId"])
            elif phase in ("end", "error", "aborted"):
                self.running.discard(payload["runId"])
            if self.state in ("idle", "working"):
                self._set_state("working" if self.running else "idle")
        elif event == "chat" and isinstance(payload, dict) and payload.get("state") == "final":
            if self.state == "error":  # a reply went through: the problem is over
                self._set_state("working" if self.running else "idle")
            self.notifier.reply_finished(payload)
        elif event == "moltis.chat.setup" and isinstance(payload, dict):
            self.notifier.setup_needed(payload)
        elif event == "device.pair.requested" and isinstance(payload, dict):
            who = payload.get("displayName") or str(payload.get("deviceId", ""))[:12]
            self._set_state("attention", f"{who} wants to pair")
            self.notifier.pairing_requested(who, payload.get("role", "operator"))
        elif event == "device.pair.resolved":
            if self.state == "attention" and not self.pending_requests():
                self._set_state("working" if self.running else "idle")
        elif event == "chat" and isinstance(payload, dict) and payload.get("state") == "error":
            # A provider problem (a bad key, an unreachable server): the icon shows it until
            # a reply goes through.
            self._set_state("error", str(payload.get("errorMessage") or "a reply failed"))

    @property
    def notifications(self) -> list[Notification]:
        """The notifications kept (the last one is what a click on a message opens)."""
        return self.notifier.notifications

    def show_notification(self, title: str, text: str) -> bool:
        """A notification kept without a session (a node's `system.notify`); whether the
        desktop can show it."""
        return self.notifier.keep(Notification(title, text, ""))

    def _chat_in_front(self) -> bool:
        return self._chat is not None and self._chat.isVisible() and self._chat.isActiveWindow()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.open_chat()

    # ------------------------------------------------------------------ menu

    @property
    def menu(self) -> QMenu:
        return self.tray_menu.menu

    def status_line(self) -> str:
        return self.tray_menu.status_line()

    def rebuild_menu(self) -> None:
        """The menu as things are now (called each time it opens)."""
        self.tray_menu.rebuild()

    def action(self, text: str) -> QAction:
        """The menu's action with this text (for scripts and tests)."""
        return self.tray_menu.action(text)

    def pending_requests(self) -> list[dict[str, Any]]:
        if self.gateway_state is None:
            return []
        store = self.gateway_state.pairing
        store.prune()
        return sorted(store.pending.values(), key=lambda r: int(r.get("ts", 0)))

    def decide_pairing(self, request_id: str, approve: bool) -> None:
        from moltis_desktop.gateway.methods.devices import decide

        if self.gateway_state is not None:
            decide(self.gateway_state, request_id, approve)

    # ------------------------------------------------------------------ actions

    def chat_window(self) -> ChatWindow:
        if self._chat is None:
            from moltis_desktop.desktop.chat_window import ChatWindow

            state = self.gateway_state
            assert state is not None, "the gateway is not running"
            self._chat = ChatWindow(
                lambda: state.http_url,
                state.ui_tickets.mint,
                self.runtime.paths.state_dir,
                self.open_url,
            )
        return self._chat

    def open_chat(self, session_key: str | None = None) -> None:
        _LOGGER.info("chat window opened%s", f" on {session_key}" if session_key else "")
        window = self.chat_window()
        if session_key:
            window.open_session(session_key)
        else:
            window.open()

    def new_chat(self) -> None:
        import time

        agent = "main"
        if self.gateway_state is not None:
            agent = self.gateway_state.settings.agents.default
        self.open_chat(f"agent:{agent}:web-{_base36(int(time.time() * 1000))}")

    def first_run(self) -> bool:
        """Nothing is set up yet (no provider configured, no key anywhere)."""
        from moltis_desktop.onboarding import needs_onboarding

        assert self.runtime.config is not None
        settings = self.runtime.config.current.settings
        return needs_onboarding(settings, self.runtime.secrets, dict(self.runtime.env))

    def open_onboarding(self) -> OnboardingDialog:
        from moltis_desktop.desktop.onboarding_dialog import OnboardingDialog

        if self._onboarding is None or not self._onboarding.isVisible():
            local = self.gateway_state.local_models if self.gateway_state is not None else None
            self._onboarding = OnboardingDialog(self.runtime, self.ollama_url, local)
            self._onboarding.saved.connect(
                lambda ref: self.notifier.message("Moltis is set up", f"Model: {ref}")
            )
            self._onboarding_load = asyncio.ensure_future(self._onboarding.load())
        self._onboarding.show()
        self._onboarding.raise_()
        return self._onboarding

    def _attach_canvas(self, state: GatewayState) -> None:
        """Make the canvas and provide it under `CANVAS`: the agent's `canvas` tool is
        offered from then on (its window opens on first use)."""
        from moltis_desktop.desktop.canvas import DesktopCanvas
        from moltis_desktop.gateway.canvas_host import canvas_dir
        from moltis_desktop.tools.canvas import CANVAS

        self.canvas = DesktopCanvas(
            lambda path: state.canvas.page_url(state.http_url, path),
            lambda: canvas_dir(state),
            self.runtime.paths.state_dir,
        )
        state.services[CANVAS] = self.canvas

    def _start_node(self) -> None:
        """Connect to the gateway as a node of its own (a failure is only logged)."""
        from moltis_desktop.desktop.node_bridge import DesktopNode

        try:
            self.node = DesktopNode(self)
            self.node.start()
        except Exception:
            _LOGGER.exception("the desktop node could not start")

    @property
    def gateway_state(self) -> GatewayState | None:
        """The running gateway's state (None before it starts)."""
        return self.gateway.state if self.gateway is not None else None

    def show_canvas(self) -> None:
        if self.canvas is not None:
            self._canvas_shown = asyncio.ensure_future(self.canvas.present())

    def open_settings(self) -> SettingsDialog:
        from moltis_desktop.desktop.settings_dialog import SettingsDialog

        if self._settings_dialog is None:
            self._settings_dialog = SettingsDialog(
                self.autostart,
                notifications=self.notify_replies,
                on_notifications=self.set_notify_replies,
                shortcut=self.shortcut_text,
                on_shortcut=self.set_shortcut,
                open_config=self.open_config,
                open_onboarding=self.open_onboarding,
                open_voice=self.open_voice,
            )
        self._settings_dialog.show()
        self._settings_dialog.raise_()
        return self._settings_dialog

    def open_pair_dialog(self) -> PairDialog:
        """The Pair a Phone window (one; raised when it is already open)."""
        from moltis_desktop.desktop.pair_dialog import PairDialog

        assert self.gateway_state is not None, "the gateway is not running"
        if self._pair_dialog is None or self._pair_dialog.gateway is not self.gateway_state:
            self._pair_dialog = PairDialog(self.gateway_state)
        self._pair_dialog.present()
        return self._pair_dialog

    def open_config(self) -> None:
        """The web app's configuration view, in the chat window."""
        self.chat_window().open("#/config")

    def open_voice(self) -> None:
        """The web app's Voice page (listening, voices, wake words, model downloads)."""
        self.chat_window().open("#/voice")

    @property
    def state_dir(self) -> Path:
        return self.runtime.paths.state_dir

    @property
    def notify_replies(self) -> bool:
        return self.notifier.replies_on

    @property
    def shortcut_text(self) -> str:
        return str(self.prefs.value("shortcuts/open_chat", "") or "")

    def set_shortcut(self, sequence: str) -> str | None:
        """Make `sequence` (Qt's text, e.g. "Ctrl+Alt+M"; empty: none) the global shortcut
        that opens the chat; returns why it cannot work here, or None."""
        problem = self.shortcut.set(sequence, asyncio.get_event_loop())
        if problem is None:
            self.prefs.setValue("shortcuts/open_chat", sequence)
            self.prefs.sync()
        return problem

    def set_notify_replies(self, on: bool) -> None:
        self.notifier.set_replies_on(on)

    def open_logs(self) -> None:
        folder = self.runtime.paths.log_dir
        private_dir(folder)
        self.open_url(QUrl.fromLocalFile(str(folder)))

    def toggle_autostart(self, checked: bool) -> None:
        try:
            if checked:
                self.autostart.enable()
            else:
                self.autostart.disable()
        except OSError as exc:
            self.notifier.message("Start at login", f"could not change it: {exc}")

    def show_about(self) -> QMessageBox:
        box = QMessageBox(
            QMessageBox.Icon.Information,
            "About Moltis",
            f"Moltis Desktop {__version__}\n\nA personal AI gateway, compatible with "
            "OpenClaw's protocol.\n\n" + self.status_line(),
        )
        box.setIconPixmap(app_icon().pixmap(64, 64))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setModal(False)
        box.show()
        return box


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def prepare_qt(env: Mapping[str, str] | None = None) -> None:
    """What Qt needs before the QApplication exists: WebEngine shares GL contexts (so it
    can be imported later, when a window opens), and as root Chromium's sandbox is off
    (it refuses to run otherwise)."""
    env = os.environ if env is None else env
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "QTWEBENGINE_DISABLE_SANDBOX" not in env:
        os.environ["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    QCoreApplication.setOrganizationName("Moltis")
    QCoreApplication.setApplicationName("Moltis Desktop")


def run_desktop(
    *, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> int:
    """The `moltis-desktop` tray app. Returns the exit code."""
    import qasync

    from moltis_desktop.desktop.single import SingleInstance, instance_name

    prepare_qt(env)
    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qapp, QApplication)
    qapp.setQuitOnLastWindowClosed(False)
    qapp.setWindowIcon(app_icon())
    runtime = Runtime(overrides=overrides, env=env)
    holder: dict[str, DesktopApp] = {}
    single = SingleInstance(
        instance_name(str(runtime.paths.state_dir)),
        lambda message: holder["app"].open_chat() if "app" in holder else None,
    )
    if not single.claim():
        print("moltis-desktop is already running; it has been brought to the front.")  # noqa: T201
        return 0
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    desktop = DesktopApp(qapp, runtime)
    holder["app"] = desktop
    # Qt's loop runs in C++: a timer lets Python see SIGTERM / SIGINT (logout sends
    # SIGTERM), which then quit as the menu does.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(desktop.request_quit))
    ticker = QTimer()
    ticker.start(250)
    ticker.timeout.connect(lambda: None)
    qapp.aboutToQuit.connect(desktop.request_quit)
    try:
        with loop:
            code = int(loop.run_until_complete(desktop.run()))
    finally:
        single.release()
        with contextlib.suppress(Exception):
            asyncio.set_event_loop(None)
    return code
