"""Crash-safe file writes: temp file, fsync, rename, with an optional backup of the old file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from moltis_desktop.core.paths import private_dir


def fsync_dir(directory: Path) -> None:
    """Make a file's creation or rename in `directory` durable (not possible, nor needed,
    on Windows)."""
    if os.name == "nt":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, name: str, data: bytes, mode: int) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600, backup: bool = False) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old or the new file,
    never a mix.

    With `backup`, the previous content is kept as `<path>.bak` (also written atomically).
    `mode` applies to the new file; secrets and config use 0600.
    """
    path = Path(path)
    directory = path.parent
    private_dir(directory, tighten=False)  # made owner-only when missing
    if backup and path.exists():
        old = path.read_bytes()
        bak = path.with_name(path.name + ".bak")
        os.replace(_write_temp(directory, bak.name, old, mode), bak)
    os.replace(_write_temp(directory, path.name, data, mode), path)
    fsync_dir(directory)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600, backup: bool = False) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, backup=backup)
