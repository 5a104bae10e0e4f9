"""QR codes for the pair dialog: a setup code as a crisp QImage, and its expired look."""

from __future__ import annotations

import logging
import math

import qrcode
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter

_LOGGER = logging.getLogger(__name__)

QR_MIN_PX = 240
"""The QR code's smallest side, in logical pixels."""
_BLACK, _WHITE = 0x00, 0xFF


def qr_matrix(text: str) -> list[list[bool]]:
    """The QR code of `text` (error correction M, a 4-module quiet zone), True = dark."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(text)
    code.make(fit=True)
    return [[bool(cell) for cell in row] for row in code.get_matrix()]


def qr_scale(modules: int, min_px: int = QR_MIN_PX) -> int:
    """The smallest whole module size (pixels) that makes `modules` at least `min_px`."""
    return max(1, math.ceil(min_px / modules))


def qr_image(text: str, scale: int | None = None, *, min_px: int = QR_MIN_PX) -> QImage:
    """`text` as a crisp QR code: black modules of `scale` by `scale` pixels (None: the
    smallest whole size giving at least `min_px`) on white, with its quiet zone."""
    matrix = qr_matrix(text)
    modules = len(matrix)
    scale = scale or qr_scale(modules, min_px)
    side = modules * scale
    rows = bytearray()
    for row in matrix:
        line = b"".join((bytes([_BLACK]) if dark else bytes([_WHITE])) * scale for dark in row)
        rows += line * scale
    # QImage does not own the buffer it is made over: copy() makes it its own.
    return QImage(bytes(rows), side, side, side, QImage.Format.Format_Grayscale8).copy()


def faded(image: QImage, caption: str) -> QImage:
    """`image` washed out with `caption` on a band across it: an expired code. The band
    hides more than error correction M can restore, so it cannot be scanned any more."""
    out = image.convertToFormat(QImage.Format.Format_RGB32)
    width, height = out.width(), out.height()
    painter = QPainter(out)
    painter.fillRect(out.rect(), QColor(255, 255, 255, 215))
    band = QRect(0, height * 3 // 10, width, height * 4 // 10)
    painter.fillRect(band, QColor("#f2f2f2"))
    font = QFont(painter.font())
    font.setPixelSize(max(14, height // 11))
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QColor("#3c3c3c"))
    painter.drawText(band, Qt.AlignmentFlag.AlignCenter, caption)
    painter.end()
    return out
