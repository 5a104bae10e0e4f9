"""The app's icons, drawn from the one source (`moltis_desktop/web/icon.svg`): the window
icon and a tray icon per state (a coloured dot in the corner)."""

from __future__ import annotations

from importlib import resources

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

STATE_COLOURS = {
    "idle": None,
    "working": "#22c55e",
    "listening": "#3b82f6",
    "speaking": "#8b5cf6",
    "attention": "#f59e0b",
    "error": "#ef4444",
}


def _svg() -> QByteArray:
    return QByteArray((resources.files("moltis_desktop") / "web" / "icon.svg").read_bytes())


def render(size: int, state: str = "idle") -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(_svg()).render(painter, QRectF(0, 0, size, size))
    colour = STATE_COLOURS.get(state)
    if colour:
        d = size * 0.42
        painter.setPen(QColor("#ffffff"))
        painter.setBrush(QColor(colour))
        painter.drawEllipse(QRectF(size - d - 1, size - d - 1, d, d))
    painter.end()
    return pixmap


def app_icon(state: str = "idle") -> QIcon:
    icon = QIcon()
    for size in (16, 22, 24, 32, 48, 64, 128, 256):
        icon.addPixmap(render(size, state))
    return icon
