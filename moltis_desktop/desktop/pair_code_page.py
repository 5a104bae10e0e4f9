"""The code page of the "Pair a Phone…" window: a setup code as a QR code with its countdown,
and beside it what the phone may do, the gateway's address and the code to copy."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFontDatabase, QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from moltis_desktop.desktop.pair_request_row import escape as _escape
from moltis_desktop.desktop.pair_request_row import muted as _muted
from moltis_desktop.desktop.qr import QR_MIN_PX, faded, qr_image

PROFILES = (
    ("full", "Full access"),
    ("limited", "Limited (no admin)"),
    ("voice-node", "Voice only"),
)
"""The setup-code profiles offered, as (profile, label)."""
ACCESS_LABELS = {
    "full": "full access",
    "limited": "limited access (no admin)",
    "node": "node access",
    "voice-node": "voice only",
}

INTRO = (
    "Open the OpenClaw-compatible app on your phone, make sure the phone is on the same "
    "Wi-Fi as this computer, and scan this code."
)


def format_remaining(ms: int) -> str:
    """`m:ss` for a time left, rounded up (10:00 just after a code is made)."""
    seconds = max(0, math.ceil(ms / 1000))
    return f"{seconds // 60}:{seconds % 60:02d}"


def wrapped(text: str = "") -> QLabel:
    """A label whose text wraps."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


class CodePage(QWidget):
    """The QR code and its countdown on the left; access, address and code beside.

    The window decides when to show a code (`show_code`), the time left (`show_remaining`)
    and expiry (`show_expired`); it reads the profile asked for from `profile` and copies the
    code when `copy_button` is clicked.
    """

    def __init__(self) -> None:
        super().__init__()
        self._qr_source = QImage()
        self._copied = QTimer(self)
        self._copied.setSingleShot(True)
        self._copied.setInterval(1500)
        self._copied.timeout.connect(lambda: self.copy_button.setText("&Copy"))

        self.intro = wrapped(INTRO)
        columns = QHBoxLayout()
        columns.setSpacing(16)
        columns.addLayout(self._build_qr_column())
        columns.addLayout(self._build_details(), 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(12)
        layout.addWidget(self.intro)
        layout.addLayout(columns)

    def _build_qr_column(self) -> QVBoxLayout:
        self.qr = QLabel()
        self.qr.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.qr.setAccessibleName("QR code for pairing a phone")
        self.qr.setAccessibleDescription("Scan it with the phone app; the setup code is below")
        self.qr.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.countdown = QLabel("")
        self.countdown.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.countdown.setAccessibleName("Time left")
        font = self.countdown.font()
        font.setBold(True)
        self.countdown.setFont(font)
        left = QVBoxLayout()
        left.setSpacing(6)
        left.addWidget(self.qr, 0, Qt.AlignmentFlag.AlignHCenter)
        left.addWidget(self.countdown)
        left.addStretch(1)
        return left

    def _build_details(self) -> QVBoxLayout:
        self.profile = QComboBox()
        for profile, label in PROFILES:
            self.profile.addItem(label, profile)
        self.profile.setAccessibleName("What the phone may do")
        self.access_note = _muted(wrapped())
        self.access_note.hide()

        self.address = QLabel("")
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.address.setAccessibleName("Gateway address")
        self.other_addresses = _muted(wrapped())
        self.other_addresses.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.fingerprint = _muted(wrapped())
        self.fingerprint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.fingerprint.hide()
        addresses = QVBoxLayout()
        addresses.setSpacing(2)
        addresses.addWidget(self.address)
        addresses.addWidget(self.other_addresses)
        addresses.addWidget(self.fingerprint)

        self.code_field = QLineEdit()
        self.code_field.setReadOnly(True)
        self.code_field.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.code_field.setAccessibleName("Setup code")
        self.code_field.setToolTip("Paste it into the phone app if it cannot scan the QR code")
        self.code_field.setPlaceholderText("expired")
        self.code_field.setMinimumWidth(250)
        self.copy_button = QPushButton("&Copy")
        self.copy_button.setAutoDefault(False)
        self.copy_button.setAccessibleName("Copy the setup code")
        code_row = QHBoxLayout()
        code_row.addWidget(self.code_field, 1)
        code_row.addWidget(self.copy_button)

        access = QVBoxLayout()
        access.setSpacing(2)
        access.addWidget(self.profile)
        access.addWidget(self.access_note)
        # Labels above their fields: the column beside the QR code is narrow.
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        access_label = QLabel("<b>&Access</b>")
        access_label.setBuddy(self.profile)
        code_label = QLabel("<b>Setup c&ode</b>")
        code_label.setBuddy(self.code_field)
        form.addRow(access_label, access)
        form.addRow(QLabel("<b>Address</b>"), addresses)
        form.addRow(code_label, code_row)
        right = QVBoxLayout()
        right.addLayout(form)
        right.addStretch(1)
        return right

    # ------------------------------------------------------------------ showing a code

    def show_code(self, result: dict[str, Any]) -> None:
        """Show a `device.pair.setupCode` result: its QR code, address, code and access."""
        code = str(result["setupCode"])
        self._qr_source = self._render_qr(code)
        self.qr.setPixmap(QPixmap.fromImage(self._qr_source))
        self.qr.setFixedSize(self.qr.pixmap().deviceIndependentSize().toSize())
        self.code_field.setText(code)
        self.code_field.setCursorPosition(0)
        url = str(result.get("gatewayUrl") or "")
        self.address.setText(f"<b>{_escape(url)}</b>")
        self.address.setToolTip(
            f"found via {result['urlSource']}" if result.get("urlSource") else ""
        )
        others = [str(u) for u in result.get("gatewayUrls") or () if u != url]
        self.other_addresses.setText("Also at " + ", ".join(others) if others else "")
        self.other_addresses.setVisible(bool(others))
        tls = str(result.get("tlsSha256") or "")
        self.fingerprint.setText(f"Certificate: {tls[:23]}…" if tls else "")
        self.fingerprint.setToolTip(tls)
        self.fingerprint.setVisible(bool(tls))
        self._show_access(result)

    def _render_qr(self, code: str) -> QImage:
        # Whole device pixels per module keep the edges sharp on HiDPI screens too (at the
        # ratio of the window the page is in).
        ratio = self.window().devicePixelRatioF() or 1.0
        image = qr_image(code, min_px=math.ceil(QR_MIN_PX * ratio))
        image.setDevicePixelRatio(ratio)
        return image

    def _show_access(self, result: dict[str, Any]) -> None:
        access = str(result.get("access") or "")
        asked = str(self.profile.currentData() or "")
        note = ""
        if result.get("accessDowngraded"):
            note = (
                f"Over a plain (unencrypted) connection on your network the phone gets "
                f"{ACCESS_LABELS.get(access, access)}. Turn on TLS (gateway.tls) for more."
            )
        elif access and access != asked:
            note = f"The phone gets {ACCESS_LABELS.get(access, access)}."
        self.access_note.setText(note)
        self.access_note.setVisible(bool(note))

    def show_remaining(self, ms: int) -> None:
        self.countdown.setText(f"Expires in {format_remaining(ms)}")

    def show_expired(self) -> None:
        """Say the code has expired, wash out its QR code and take the code away."""
        self.countdown.setText("This code has expired")
        image = faded(self._qr_source, "Expired")
        image.setDevicePixelRatio(self._qr_source.devicePixelRatio())
        self.qr.setPixmap(QPixmap.fromImage(image))
        self.code_field.clear()
        self.copy_button.setText("&Copy")
        self.copy_button.setEnabled(False)

    def show_copied(self) -> None:
        """Say "Copied" on the Copy button for a moment."""
        self.copy_button.setText("Copied")
        self._copied.start()
