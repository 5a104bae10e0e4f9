"""One pending pairing request in the pair dialog: who is asking, and Approve / Reject."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

_LOGGER = logging.getLogger(__name__)


def escape(text: str) -> str:
    """`text` safe inside Qt rich text: &, < and > escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def muted(label: QLabel, smaller: bool = True) -> QLabel:
    """`label` in the muted placeholder colour (and a little smaller, if `smaller`)."""
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    if smaller:
        font = label.font()
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        label.setFont(font)
    return label


class RequestRow(QFrame):
    """One pending pairing request: who, and Approve / Reject.

    `on_decide(request id, approve)` is called when a button is clicked (the pair dialog's
    `decide`).
    """

    def __init__(self, request: dict[str, Any], on_decide: Callable[[str, bool], None]) -> None:
        super().__init__()
        self.request_id = str(request["requestId"])
        self.device_id = str(request.get("deviceId", ""))
        self.name = str(request.get("displayName") or self.device_id[:12] or "A device")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.text = QLabel(f"<b>{escape(self.name)}</b> wants to pair")
        self.text.setTextFormat(Qt.TextFormat.RichText)
        roles = request.get("roles") or [request.get("role") or "operator"]
        detail = "as " + ", ".join(str(r) for r in roles)
        if request.get("remoteIp"):
            detail += f" · from {request['remoteIp']}"
        self.detail = muted(QLabel(escape(detail)))
        self.approve = QPushButton("A&pprove")
        self.approve.setAccessibleName(f"Approve {self.name}")
        self.approve.setAutoDefault(False)
        self.approve.clicked.connect(lambda: on_decide(self.request_id, True))
        self.reject = QPushButton("Re&ject")
        self.reject.setAccessibleName(f"Reject {self.name}")
        self.reject.setAutoDefault(False)
        self.reject.clicked.connect(lambda: on_decide(self.request_id, False))
        words = QVBoxLayout()
        words.setSpacing(0)
        words.addWidget(self.text)
        words.addWidget(self.detail)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 6, 8, 6)
        row.addLayout(words, 1)
        row.addWidget(self.approve)
        row.addWidget(self.reject)
