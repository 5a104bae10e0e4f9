"""Append-only JSON-lines files that survive crashes: fsynced appends, torn last lines cut."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from moltis_desktop.core.atomic import fsync_dir

_LOGGER = logging.getLogger(__name__)

_CHUNK = 64 * 1024


def encode_line(record: Any) -> bytes:
    """One JSON line (compact, UTF-8, ending in a newline). Raises TypeError for values JSON
    cannot hold."""
    return msgspec.json.encode(record) + b"\n"


def decode_line(raw: bytes) -> dict[str, Any] | None:
    """The object on one line, or None when the line is not a JSON object."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _cut_torn_tail(fh: Any, path: Path) -> None:
    # A crash in the middle of a write leaves a last line without its newline. Appending
    # after it would glue the next record onto the fragment and lose both, so the
    # fragment (never a complete line) is cut first. Callers hold the file's lock, so no
    # other writer is half-way through a line.
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    end = size
    keep = 0
    while end > 0:
        start = max(0, end - _CHUNK)
        fh.seek(start)
        found = fh.read(end - start).rfind(b"\n")
        if found >= 0:
            keep = start + found + 1
            break
        end = start
    fh.truncate(keep)
    os.fsync(fh.fileno())
    _LOGGER.warning(
        "Cut a torn last line (%d bytes) from %s, left by an interrupted write",
        size - keep,
        path,
    )


def append_lines(path: Path, lines: Sequence[bytes]) -> os.stat_result:
    """Append complete lines (each ending in a newline) and fsync them; returns the file's
    stat afterwards. The caller holds the lock that serialises writers of `path`."""
    created = not path.exists()
    with path.open("a+b", buffering=0) as fh:
        _cut_torn_tail(fh, path)
        view = memoryview(b"".join(lines))
        while view:
            written = fh.write(view)
            view = view[written:]
        os.fsync(fh.fileno())
        stat = os.fstat(fh.fileno())
    if created:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        fsync_dir(path.parent)
    return stat


def iter_lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """`(end offset, line)` for each complete line from byte `start` on. A last line without
    its newline is not yielded: it is a write in progress or one a crash cut short."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        fh.seek(start)
        offset = start
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            offset += len(raw)
            yield offset, raw


def read_records(path: Path, start: int = 0) -> list[dict[str, Any]]:
    """Every complete line's object; lines that are not JSON objects are skipped (logged)."""
    records: list[dict[str, Any]] = []
    bad = 0
    for _, raw in iter_lines(path, start):
        record = decode_line(raw)
        if record is None:
            bad += 1
        else:
            records.append(record)
    if bad:
        _LOGGER.warning("Skipped %d unreadable line(s) in %s", bad, path)
    return records


def read_tail_records(path: Path, max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
    """The objects on the complete lines within the last `max_bytes` of the file, and
    whether that window reached the start of the file (i.e. nothing was left out)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], True
    if size <= max_bytes:
        return read_records(path), True
    with path.open("rb") as fh:
        # From one byte early, so that a window starting exactly on a line keeps that line.
        fh.seek(size - max_bytes - 1)
        fh.readline()  # the rest of a line that began before the window
        start = fh.tell()
    return read_records(path, start), False
