"""logs.tail: pages through the gateway's own JSON log file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from moltis_desktop.gateway.registry import MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError

if TYPE_CHECKING:
    from pathlib import Path

    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable()

DEFAULT_LIMIT = 500
DEFAULT_MAX_BYTES = 250_000


class LogsTailParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    cursor: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Byte offset returned by the previous call (the end of the last whole line)."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = DEFAULT_LIMIT
    """Most lines returned (the newest are kept)."""
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = DEFAULT_MAX_BYTES
    """Most bytes read."""


def read_log_slice(path: Path, cursor: int | None, limit: int, max_bytes: int) -> dict[str, Any]:
    """The lines after `cursor` (or the tail), OpenClaw's `logs.tail` semantics.

    A cursor past the end means the file was rotated: `reset` is set and the tail returned.
    A gap larger than `max_bytes` skips ahead (`reset`, `truncated`, `skippedBytes`).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    reset = truncated = False
    skipped: int | None = None
    if cursor is None:
        start = max(0, size - max_bytes)
        truncated = start > 0
    elif cursor > size:
        reset = True
        start = max(0, size - max_bytes)
        truncated = start > 0
    elif size - cursor > max_bytes:
        reset = truncated = True
        start = size - max_bytes
        skipped = start - cursor
    else:
        start = cursor
    result: dict[str, Any] = {
        "file": str(path),
        "cursor": size,
        "size": size,
        "lines": [],
        "truncated": truncated,
        "reset": reset,
    }
    if skipped is not None:
        result["skippedBytes"] = skipped
    if size == 0 or size <= start:
        return result
    try:
        with path.open("rb") as fh:
            previous = b"\n"
            if start > 0:
                fh.seek(start - 1)
                previous = fh.read(1)
            chunk = fh.read(size - start)
    except FileNotFoundError:
        return {
            "file": str(path),
            "cursor": 0,
            "size": 0,
            "lines": [],
            "truncated": False,
            "reset": cursor is not None and cursor > 0,
        }
    except OSError as exc:
        raise GatewayError(ErrorCode.UNAVAILABLE, f"log read failed: {exc}") from None
    last_newline = chunk.rfind(b"\n")
    if last_newline < 0:
        result["cursor"] = start
        return result
    pieces = chunk[:last_newline].split(b"\n")
    if previous != b"\n":
        pieces = pieces[1:]  # the first piece is the tail of a line that began earlier
    if len(pieces) > limit:
        pieces = pieces[-limit:]
        result["truncated"] = True
    result["lines"] = [p.decode("utf-8", errors="replace") for p in pieces]
    result["cursor"] = start + last_newline + 1
    return result


@TABLE.method("logs.tail", scope=Scope.READ, params=LogsTailParams)
def logs_tail(ctx: MethodContext, params: LogsTailParams) -> dict[str, Any]:
    """Lines of the gateway's JSON log (secrets are redacted when written)."""
    return read_log_slice(ctx.state.log_file, params.cursor, params.limit, params.max_bytes)
