"""The tray's "Pair a Phone…" window: a setup code (`device.pair.setupCode`) as a QR code
with its countdown (the code page, `pair_code_page`), the way to let phones reach a
loopback-only gateway, and the pairing requests that arrive while it is open."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QGuiApplication, QHideEvent, QPixmap, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.desktop.icons import app_icon
from moltis_desktop.desktop.pair_code_page import CodePage
from moltis_desktop.desktop.pair_code_page import wrapped as _wrapped
from moltis_desktop.desktop.pair_request_row import RequestRow
from moltis_desktop.desktop.pair_request_row import escape as _escape
from moltis_desktop.desktop.pair_request_row import muted as _muted
from moltis_desktop.gateway.methods.devices import decide, setup_code
from moltis_desktop.protocol.frames import GatewayError

if TYPE_CHECKING:
    from moltis_desktop.core.clock import Clock
    from moltis_desktop.gateway.state import GatewayState

_LOGGER = logging.getLogger(__name__)

CLOSE_AFTER_MS = 2000
"""How long "✓ … is paired" stays up before the window closes itself, in milliseconds."""
PAGE_MIN_WIDTH = 480
"""The narrowest the pages without a QR code get, in logical pixels."""
REBIND_WAIT_S = 10.0
"""How long to wait for the gateway to move onto the network, in seconds."""

LAN_DISABLED_TEXT = "Phones can't reach Moltis yet: it only accepts connections from this computer."
LAN_EXPLAIN = (
    "Allow connections from your local network so a phone can connect. Sign-in stays on: "
    "a phone needs this window's code (or the gateway's token or password), and you approve "
    "each new device."
)
NO_AUTH_TEXT = (
    "Sign-in is turned off (gateway.auth.mode is “none”), so opening Moltis to your network "
    "would let anyone on it in. Turn on a token or password in Settings first, then come back."
)
OK_COLOUR = "#22a559"
ERROR_COLOUR = "#e5484d"


# ---------------------------------------------------------------------- the dialog


def _detail_code(exc: GatewayError) -> str:
    details = exc.shape.details
    return str(details.get("code") or "") if isinstance(details, dict) else ""


class PairDialog(QDialog):
    """Shows a setup code to scan and follows it until a phone has paired with it.

    States (`state`): `code` (a live code), `expired`, `lan-disabled` (the gateway is on
    loopback only), `waiting` (moving onto the network), `error`, `paired`.
    """

    def __init__(self, gateway: GatewayState, *, clock: Clock | None = None) -> None:
        super().__init__()
        self.gateway = gateway
        self.clock: Clock = clock or gateway.clock
        """Where the countdown's "now" comes from (the gateway's clock unless given)."""
        self.public_url: str | None = None
        """An address to offer besides the LAN ones (`public_url` of the setup code)."""
        self.setup_result: dict[str, Any] = {}
        """The last `device.pair.setupCode` result shown."""
        self.state = ""
        self.rows: dict[str, RequestRow] = {}
        self._setup_ids: set[str] = set()
        """The codes shown since the window opened (an older one still works)."""
        self._ours: set[str] = set()
        """Devices known to be pairing with one of those codes."""
        self._stale = True
        self._wait: asyncio.Future[None] | None = None
        self.setWindowTitle("Pair a Phone")
        self.setWindowIcon(app_icon())

        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.tick)
        self.close_timer = QTimer(self)
        self.close_timer.setSingleShot(True)
        self.close_timer.setInterval(CLOSE_AFTER_MS)
        self.close_timer.timeout.connect(self.close)

        # One page shown at a time; the hidden ones take no room (a QStackedWidget
        # would keep the window as tall as its tallest page).
        self.code_page = CodePage()
        self.lan_page = self._build_lan_page()
        self.error_page = self._build_error_page()
        self.done_page = self._build_done_page()
        self.pages = (self.code_page, self.lan_page, self.error_page, self.done_page)
        self.page: QWidget = self.code_page
        """The page shown."""
        # The code page's widgets that the window works with, by their names here.
        code = self.code_page
        self.qr, self.countdown = code.qr, code.countdown
        self.profile, self.address = code.profile, code.address
        self.code_field, self.copy_button = code.code_field, code.copy_button
        self.profile.currentIndexChanged.connect(self._profile_changed)
        self.copy_button.clicked.connect(self.copy_code)

        self.requests_box = self._build_requests_box()
        buttons = self._build_buttons()
        self._layout = layout = QVBoxLayout(self)
        # The window is as big as its content: a fixed size counts the height that wrapped
        # text needs (a minimum size does not, and would squeeze the QR code).
        layout.setSizeConstraint(QLayout.SizeConstraint.SetFixedSize)
        layout.setSpacing(10)
        for page in self.pages:
            page.hide()
            layout.addWidget(page)
        layout.addWidget(self.requests_box)
        layout.addLayout(buttons)

    # ------------------------------------------------------------------ building

    def _build_requests_box(self) -> QFrame:
        box = QFrame()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Waiting for your approval</b>"))
        self.requests_list = QVBoxLayout()
        layout.addLayout(self.requests_list)
        self.request_status = _muted(_wrapped())
        self.request_status.hide()
        layout.addWidget(self.request_status)
        box.hide()
        return box

    def _build_buttons(self) -> QHBoxLayout:
        self.regenerate_button = QPushButton("&Regenerate")
        self.regenerate_button.setToolTip("Make a new setup code")
        self.regenerate_button.setAutoDefault(False)  # Enter regenerates only once expired
        self.regenerate_button.clicked.connect(self.regenerate)
        self.close_button = QPushButton("Close")
        self.close_button.setAutoDefault(False)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.regenerate_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        return buttons

    def _build_lan_page(self) -> QWidget:
        page = QWidget()
        page.setMinimumWidth(PAGE_MIN_WIDTH)
        self.lan_heading = _wrapped(f"<b>{LAN_DISABLED_TEXT}</b>")
        self.lan_text = _wrapped(LAN_EXPLAIN)
        self.allow_button = QPushButton("&Allow on My Network")
        self.allow_button.clicked.connect(self.allow_on_network)
        self.allow_button.setToolTip("Sets gateway.bind to “lan” in the config file")
        self.lan_status = _wrapped()
        self.lan_status.hide()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.lan_heading)
        layout.addWidget(self.lan_text)
        layout.addSpacing(6)
        layout.addWidget(self.allow_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.lan_status)
        layout.addStretch(1)
        return page

    def _build_error_page(self) -> QWidget:
        page = QWidget()
        page.setMinimumWidth(PAGE_MIN_WIDTH)
        self.error_text = _wrapped()
        self.error_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(_wrapped("<b>Moltis could not make a setup code.</b>"))
        layout.addWidget(self.error_text)
        layout.addStretch(1)
        return page

    def _build_done_page(self) -> QWidget:
        page = QWidget()
        page.setMinimumSize(PAGE_MIN_WIDTH, 120)
        self.done_text = QLabel("")
        self.done_text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = self.done_text.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.done_text.setFont(font)
        self.done_detail = _muted(QLabel("It can reach Moltis now. This window closes by itself."))
        self.done_detail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        layout.addWidget(self.done_text)
        layout.addWidget(self.done_detail)
        layout.addStretch(1)
        return page

    # ------------------------------------------------------------------ what tests read

    def code_text(self) -> str:
        """The setup code shown, while it can be used (empty otherwise)."""
        return str(self.setup_result.get("setupCode") or "") if self.state == "code" else ""

    @property
    def setup_id(self) -> str:
        return str(self.setup_result.get("setupId") or "")

    def remaining_ms(self) -> int:
        expires = int(self.setup_result.get("expiresAtMs") or 0)
        return max(0, expires - self.clock.now_ms())

    def countdown_text(self) -> str:
        return self.countdown.text()

    def qr_pixmap(self) -> QPixmap:
        """The QR code as shown."""
        return self.qr.pixmap()

    # ------------------------------------------------------------------ life cycle

    def present(self) -> None:
        """Show (a fresh code if it was closed), raise and focus."""
        self._refresh_if_stale()
        self.show()
        self._fit()  # once shown, with the style's fonts and margins
        self.raise_()
        self.activateWindow()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._refresh_if_stale()
        self.timer.start()

    def _refresh_if_stale(self) -> None:
        if self._stale:
            self._stale = False
            self._setup_ids.clear()
            self._ours.clear()
            self.request_status.hide()
            self._sync_requests()
            self.requests_box.setVisible(bool(self.rows))
            self.regenerate()
            if self.state == "code":
                self.copy_button.setFocus()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 - Qt's name
        super().hideEvent(event)
        if not event.spontaneous():  # closed (Close, Esc, done), not minimised
            self._stop()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self._stop()
        super().closeEvent(event)

    def _stop(self) -> None:
        self.timer.stop()
        self.close_timer.stop()
        self._stale = True
        if self._wait is not None and not self._wait.done():
            self._wait.cancel()

    def _show_page(self, page: QWidget) -> None:
        self.page = page
        for other in self.pages:
            other.setVisible(other is page)
        self._fit()

    def _fit(self) -> None:
        """Size the window to its content now, not on the next layout pass (a screenshot
        right after a change must not see the old size)."""
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
        self._layout.invalidate()
        self._layout.activate()

    # ------------------------------------------------------------------ the code

    def _profile_changed(self) -> None:
        if self.state in ("code", "expired", "error"):
            self.regenerate()

    def regenerate(self) -> None:
        """Ask the gateway for a new setup code and show it (or why there is none)."""
        profile = str(self.profile.currentData() or "full")
        try:
            result = setup_code(self.gateway, profile=profile, public_url=self.public_url)
        except GatewayError as exc:
            if _detail_code(exc) == "LAN_DISABLED":
                self._show_lan_disabled()
            else:
                self._show_error(exc.shape.message)
            return
        except MoltisError as exc:
            self._show_error(exc.message)
            return
        self._show_code(dict(result))

    def _show_code(self, result: dict[str, Any]) -> None:
        self.setup_result = result
        self._setup_ids.add(self.setup_id)
        self.code_page.show_code(result)
        self._show_page(self.code_page)
        self.regenerate_button.show()
        self.regenerate_button.setDefault(False)
        self._set_state("code")
        self.tick()

    def tick(self) -> None:
        """Once a second while open: the countdown, expiry, and requests that went away."""
        if self.state in ("code", "expired"):
            left = self.remaining_ms()
            if left > 0:
                self.code_page.show_remaining(left)
            elif self.state == "code":
                self._show_expired()
        if self.rows:
            self._sync_requests()

    def _show_expired(self) -> None:
        self._set_state("expired")
        self.code_page.show_expired()
        self.regenerate_button.setDefault(True)
        self.regenerate_button.setFocus()

    def copy_code(self) -> None:
        code = self.code_text()
        if not code:
            return
        QGuiApplication.clipboard().setText(code)
        self.code_page.show_copied()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.regenerate_button.setText("&Try Again" if state == "error" else "&Regenerate")
        self.copy_button.setEnabled(state == "code")
        self.profile.setEnabled(state in ("code", "expired"))

    # ------------------------------------------------------------------ loopback only

    def _show_lan_disabled(self) -> None:
        self.setup_result = {}
        self._show_page(self.lan_page)
        self.regenerate_button.hide()
        no_auth = self.gateway.settings.gateway.auth.mode == "none"
        self.allow_button.setEnabled(not no_auth)
        self.allow_button.setDefault(not no_auth)
        self._lan_status(NO_AUTH_TEXT if no_auth else "")
        self._set_state("lan-disabled")

    def _lan_status(self, text: str, colour: str | None = None) -> None:
        self.lan_status.setText(
            f"<span style='color:{colour}'>{_escape(text)}</span>" if colour else _escape(text)
        )
        self.lan_status.setVisible(bool(text))

    def allow_on_network(self) -> bool:
        """Set `gateway.bind = "lan"` in the config (the gateway moves its listener by
        itself), then make a code. Refused while sign-in is off. True when switched."""
        gw = self.gateway
        if gw.settings.gateway.auth.mode == "none":
            self._lan_status(NO_AUTH_TEXT, ERROR_COLOUR)
            return False
        try:
            gw.config.patch({"gateway": {"bind": "lan"}})
        except MoltisError as exc:
            self._lan_status(f"Could not change the setting: {exc.message}", ERROR_COLOUR)
            return False
        if gw.settings.gateway.bind == "loopback":
            self._lan_status(
                "The setting is saved, but gateway.bind is also set on the command line or in "
                "the environment, which wins: change it there.",
                ERROR_COLOUR,
            )
            return False
        _LOGGER.info("pairing: gateway.bind set to lan from the Pair a Phone window")
        self.allow_button.setEnabled(False)
        self._lan_status("Opening Moltis to your network…")
        self._set_state("waiting")
        self._wait = asyncio.ensure_future(self._regenerate_when_listening())
        return True

    async def _regenerate_when_listening(self) -> None:
        from moltis_desktop.gateway.state import resolve_bind

        gw = self.gateway
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REBIND_WAIT_S
        # The gateway moves its listener on its own (a config listener); it has no event
        # to wait on, so look every 50 ms.
        while gw.host != resolve_bind(gw.settings.gateway.bind) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.regenerate()
        if self.state == "lan-disabled":
            self._lan_status(
                "Moltis could not start listening on your network; the log says why "
                "(tray menu → Open Logs Folder).",
                ERROR_COLOUR,
            )

    # ------------------------------------------------------------------ other states

    def _show_error(self, message: str) -> None:
        self.setup_result = {}
        self.error_text.setText(_escape(message))
        self._show_page(self.error_page)
        self.regenerate_button.show()
        self.regenerate_button.setDefault(True)
        self._set_state("error")

    def show_paired(self, name: str) -> None:
        """Say that `name` is paired (with a tick), then close after `CLOSE_AFTER_MS`."""
        self.done_text.setText(
            f"<span style='color:{OK_COLOUR}'>✓</span> {_escape(name)} is paired"
        )
        self.done_text.setAccessibleName(f"{name} is paired")
        self._show_page(self.done_page)
        self.regenerate_button.hide()
        self.requests_box.hide()
        self._set_state("paired")
        self.close_button.setFocus()
        self.close_timer.start()

    # ------------------------------------------------------------------ gateway events

    def on_event(self, event: str, payload: Any) -> None:
        """A gateway event (the app routes `gateway.listeners` here while open)."""
        if not isinstance(payload, dict):
            return
        if event == "device.pair.requested":
            # A phone that scanned this code asks first unless it is approved silently; the
            # event may not say which code it used, the pending request does.
            pending = self.gateway.pairing.pending.get(str(payload.get("requestId", ""))) or {}
            setup = payload.get("setupId") or pending.get("setupId")
            if setup and setup in self._setup_ids:
                self._ours.add(str(payload.get("deviceId", "")))
            self._add_request(payload)
        elif event == "device.pair.resolved":
            row = self.rows.get(str(payload.get("requestId", "")))
            name = row.name if row is not None else ""
            self._remove_request(str(payload.get("requestId", "")))
            device = str(payload.get("deviceId", ""))
            if payload.get("decision") == "approved" and device in self._ours:
                self._completed(name or device[:12])
        elif event == "device.pair.setup.completed" and payload.get("setupId") in self._setup_ids:
            # The phone has its tokens.
            device = str(payload.get("deviceId", ""))
            self._completed(str(payload.get("deviceName") or "") or self._name_of(device))

    def _name_of(self, device_id: str) -> str:
        paired = self.gateway.pairing.paired.get(device_id) or {}
        name = paired.get("displayName") if isinstance(paired, dict) else None
        return str(name or "Your phone")

    def _completed(self, name: str) -> None:
        if self.state != "paired" and self.isVisible():
            _LOGGER.info("pairing: %s paired with setup code %s", name, self.setup_id)
            self.show_paired(name)

    def _add_request(self, request: dict[str, Any]) -> None:
        rid = str(request.get("requestId") or "")
        if not rid or rid in self.rows:
            return
        row = RequestRow(request, self.decide)
        self.rows[rid] = row
        self.requests_list.addWidget(row)
        row.show()  # now: a child added to a shown window is otherwise shown later
        # Tab reaches it after the code, before Regenerate / Close.
        QWidget.setTabOrder(self.copy_button, row.approve)
        QWidget.setTabOrder(row.approve, row.reject)
        self.request_status.hide()
        if self.state != "paired":
            self.requests_box.show()
            self._fit()

    def _remove_request(self, request_id: str) -> None:
        row = self.rows.pop(request_id, None)
        if row is not None:
            self.requests_list.removeWidget(row)
            row.deleteLater()
        if self.state != "paired":
            self.requests_box.setVisible(bool(self.rows) or self.request_status.isVisibleTo(self))
            self._fit()

    def _sync_requests(self) -> None:
        """The rows as the pairing store has them (requests expire after 5 minutes)."""
        store = self.gateway.pairing
        store.prune()
        for rid in [r for r in self.rows if r not in store.pending]:
            self._remove_request(rid)
        for request in sorted(store.pending.values(), key=lambda r: int(r.get("ts", 0))):
            self._add_request(request)

    def decide(self, request_id: str, approve: bool) -> None:
        """Approve or reject a request shown here (as the tray menu does)."""
        row = self.rows.get(request_id)
        name = row.name if row is not None else "The device"
        done = decide(self.gateway, request_id, approve)
        self._remove_request(request_id)  # also done by the `resolved` event
        if self.state == "paired":
            return
        if done is None:
            text = f"{name}'s request had expired; it can ask again."
        elif approve:
            text = f"✓ {name} can connect now."
        else:
            text = f"{name} was turned away."
        self.request_status.setText(_escape(text))
        self.request_status.show()
        self.requests_box.show()
        self._fit()
