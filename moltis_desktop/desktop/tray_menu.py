"""The tray icon's menu, rebuilt each time it opens: the gateway's status, the chat and the
canvas, Recent Sessions, Pairing Requests (when there are some), the Voice and Local Model
submenus, the dialogs, Start at Login, About and Quit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

if TYPE_CHECKING:
    from moltis_desktop.desktop.autostart import Autostart
    from moltis_desktop.desktop.local_model_menu import LocalModelMenu
    from moltis_desktop.desktop.voice_menu import VoiceMenu
    from moltis_desktop.gateway.state import GatewayState
    from moltis_desktop.runtime import Runtime

_RECENT = 8


class MenuHost(Protocol):
    """What the menu shows and what its items do (DesktopApp is one)."""

    @property
    def gateway_state(self) -> GatewayState | None: ...
    @property
    def error(self) -> str: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def autostart(self) -> Autostart: ...
    @property
    def voice_menu(self) -> VoiceMenu | None: ...
    @property
    def local_model_menu(self) -> LocalModelMenu | None: ...
    def pending_requests(self) -> list[dict[str, Any]]: ...
    def decide_pairing(self, request_id: str, approve: bool) -> None: ...
    def open_chat(self, session_key: str | None = None) -> None: ...
    def show_canvas(self) -> None: ...
    def new_chat(self) -> None: ...
    def open_pair_dialog(self) -> object: ...
    def open_onboarding(self) -> object: ...
    def open_settings(self) -> object: ...
    def open_logs(self) -> None: ...
    def toggle_autostart(self, checked: bool) -> None: ...
    def show_about(self) -> object: ...
    def request_quit(self) -> None: ...


class TrayMenu:
    """The tray's QMenu (`menu`), rebuilt from `host` each time it is about to show."""

    def __init__(self, host: MenuHost) -> None:
        self.host = host
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.rebuild)

    def status_line(self) -> str:
        gw = self.host.gateway_state
        if gw is None:
            error = self.host.error
            return "Gateway starting…" if not error else f"Gateway stopped: {error}"
        clients = sum(1 for c in gw.connections if c.role)
        devices = sum(1 for c in gw.connections if c.device_id)
        health = "ready" if gw.ready and not gw.draining else "not ready"
        if gw.config.error is not None:
            health = "config error"
        return (
            f"Gateway {health} · {gw.host}:{gw.port} · {clients} client"
            f"{'' if clients == 1 else 's'} · {devices} device{'' if devices == 1 else 's'}"
        )

    def rebuild(self) -> None:
        """The menu as things are now (called each time it opens)."""
        host, menu = self.host, self.menu
        menu.clear()
        status = menu.addAction(self.status_line())
        status.setEnabled(False)
        menu.addSeparator()
        _add(menu, "Open Chat", lambda: host.open_chat())  # noqa: PLW0108 - drops `checked`
        _add(menu, "Canvas", host.show_canvas)
        _add(menu, "New Chat", host.new_chat)
        recent = menu.addMenu("Recent Sessions")
        sessions = self.recent_sessions()
        for key, title in sessions:
            _add(recent, title, lambda k=key: host.open_chat(k))
        if not sessions:
            recent.addAction("No sessions yet").setEnabled(False)
        menu.addSeparator()
        pending = host.pending_requests()
        if pending:
            requests = menu.addMenu(f"Pairing Requests ({len(pending)})")
            for req in pending:
                who = req.get("displayName") or str(req["deviceId"])[:12]
                _add(
                    requests,
                    f"Approve {who} as {req.get('role')}",
                    lambda _=False, rid=req["requestId"]: host.decide_pairing(rid, True),
                )
                _add(
                    requests,
                    f"Reject {who}",
                    lambda _=False, rid=req["requestId"]: host.decide_pairing(rid, False),
                )
            menu.addSeparator()
        if host.voice_menu is not None:
            host.voice_menu.build(menu)
        if host.local_model_menu is not None:
            host.local_model_menu.build(menu)
        pair = _add(menu, "Pair a Phone…", host.open_pair_dialog)
        pair.setEnabled(host.gateway_state is not None)
        _add(menu, "Set Up a Provider…", host.open_onboarding)
        _add(menu, "Settings…", host.open_settings)
        _add(menu, "Open Logs Folder", host.open_logs)
        login = _add(menu, "Start at Login", host.toggle_autostart)
        login.setCheckable(True)
        login.setChecked(host.autostart.enabled())
        _add(menu, "About Moltis", host.show_about)
        menu.addSeparator()
        _add(menu, "Quit Moltis", host.request_quit)

    def action(self, text: str) -> QAction:
        """The menu's action with this text, in it or a submenu (for scripts and tests)."""
        self.rebuild()
        for action in self.menu.actions():
            if action.text() == text:
                return action
            sub = action.menu()
            if isinstance(sub, QMenu):
                for inner in sub.actions():
                    if inner.text() == text:
                        return inner
        raise KeyError(text)

    def recent_sessions(self) -> list[tuple[str, str]]:
        """The latest sessions, as (key, title)."""
        agent = self.host.runtime.agent
        if agent is None:
            return []
        out = []
        for entry in agent.chat.sessions.list(limit=_RECENT):
            label = entry.get("label") or entry.get("displayName")
            tail = entry.key.split(":", 2)[-1]
            out.append((entry.key, str(label or ("Main chat" if tail == "main" else tail))))
        return out


def _add(menu: QMenu, text: str, slot: Any) -> QAction:
    action = menu.addAction(text)
    action.triggered.connect(slot)
    return action
