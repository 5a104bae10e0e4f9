"""Render the app icon at every size packaging needs, from the one source
`resources/icons/moltis.svg`:

- `resources/icons/png/moltis-<size>.png` for every size in `SIZES` (Linux hicolor theme,
  Briefcase's Linux/Flatpak/AppImage icons, the tray);
- `resources/icons/moltis.ico` (Windows: exe, MSI, shortcuts), PNG-compressed entries;
- `resources/icons/moltis.icns` (macOS .app/.dmg), PNG-compressed entries.

Qt renders the SVG (QSvgRenderer, offscreen); the .ico and .icns containers are written here
directly (both are a small header and a table of PNG blobs), so neither Pillow nor macOS's
iconutil is needed. Every PNG carries the SHA-256 of the SVG it was rendered from in a
`Source-SHA256` text chunk, which is how tests/test_packaging.py tells stale icons from
fresh ones without re-rendering (pixels may differ slightly between Qt versions).

Run: `QT_QPA_PLATFORM=offscreen .venv/bin/python installer/make_icons.py` (it sets the
variable itself when unset). Re-running it rewrites identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
SOURCE = ICONS / "moltis.svg"
PNG_DIR = ICONS / "png"
ICO = ICONS / "moltis.ico"
ICNS = ICONS / "moltis.icns"

SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512, 1024)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
"""What Windows picks from: small sizes for lists and the tray, 256 for large tiles."""
ICNS_TYPES = (
    # (OSType, pixel size): 1x and 2x ("Retina") slots, all PNG (macOS 10.7+).
    (b"icp4", 16),
    (b"icp5", 32),
    (b"icp6", 64),
    (b"ic07", 128),
    (b"ic08", 256),
    (b"ic09", 512),
    (b"ic10", 1024),
    (b"ic11", 32),
    (b"ic12", 64),
    (b"ic13", 256),
    (b"ic14", 512),
)
SOURCE_KEY = "Source-SHA256"


def png_path(size: int) -> Path:
    return PNG_DIR / f"moltis-{size}.png"


def source_digest(svg: Path = SOURCE) -> str:
    return hashlib.sha256(svg.read_bytes()).hexdigest()


def render_pngs(svg: Path = SOURCE, sizes: tuple[int, ...] = SIZES) -> dict[int, bytes]:
    """The SVG rendered at each size, as PNG file contents."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icons: {svg} is not a valid SVG")
    digest = source_digest(svg)
    out: dict[int, bytes] = {}
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter, QRectF(0, 0, size, size))
        painter.end()
        image.setText(SOURCE_KEY, digest)
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buffer, "PNG", 9):
            raise SystemExit(f"make_icons: could not encode the {size}px PNG")
        buffer.close()
        out[size] = bytes(data.data())
    return out


def ico_bytes(pngs: dict[int, bytes], sizes: tuple[int, ...] = ICO_SIZES) -> bytes:
    """A Windows .ico holding one PNG-compressed image per size (Vista and later)."""
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = len(header) + 16 * len(sizes)
    entries, blobs = b"", b""
    for size in sizes:
        blob = pngs[size]
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(blob), offset)
        blobs += blob
        offset += len(blob)
    return header + entries + blobs


def icns_bytes(pngs: dict[int, bytes], types: tuple[tuple[bytes, int], ...] = ICNS_TYPES) -> bytes:
    """A macOS .icns: the `icns` header, then one (type, length, PNG) element per slot."""
    body = b"".join(
        ostype + struct.pack(">I", 8 + len(pngs[size])) + pngs[size] for ostype, size in types
    )
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--svg", type=Path, default=SOURCE, help="source SVG (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    pngs = render_pngs(args.svg)
    outputs = {png_path(size): data for size, data in pngs.items()}
    outputs[ICO] = ico_bytes(pngs)
    outputs[ICNS] = icns_bytes(pngs)
    changed = [path for path, data in outputs.items() if write_if_changed(path, data)]
    total = sum(len(data) for data in outputs.values())
    for path in changed:
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    sys.stdout.write(
        f"{len(outputs)} icon files in {ICONS.relative_to(ROOT)} ({total / 1024:.0f} KiB), "
        f"{len(changed)} changed\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
