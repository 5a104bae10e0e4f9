"""One client's WebSocket connection: who it is, and non-blocking sends with a byte budget."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

from moltis_desktop.protocol.constants import CloseCode
from moltis_desktop.protocol.frames import with_seq

if TYPE_CHECKING:
    from aiohttp import web


_TEXT_FIN = 0x81


def _text_frame_header(length: int) -> bytes:
    if length < 126:
        return bytes((_TEXT_FIN, length))
    if length < 65536:
        return struct.pack("!BBH", _TEXT_FIN, 126, length)
    return struct.pack("!BBQ", _TEXT_FIN, 127, length)


class Connection:
    """A connected client.

    Frames are written straight to the transport rather than through aiohttp's awaitable
    `send_str`: a send must never block the sender (a broadcast to a thousand clients, a
    handler answering), and a client that does not read must cost a bounded number of bytes.
    That is OpenClaw's slow-consumer rule: past `max_buffered` queued bytes, droppable events
    are skipped and anything else closes the connection with 1008. Compression is not
    negotiated (as OpenClaw's own server), so a frame is a header plus the UTF-8 JSON.
    """

    __slots__ = (
        "_close_task",
        "_closing",
        "conn_id",
        "device_id",
        "inflight",
        "max_buffered",
        "max_payload",
        "node_id",
        "remote_ip",
        "role",
        "scopes",
        "seq",
        "tasks",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        *,
        conn_id: str,
        remote_ip: str,
        max_buffered: int,
        max_payload: int,
        inflight: int,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.conn_id = conn_id
        self.remote_ip = remote_ip
        self.max_buffered = max_buffered
        self.max_payload = max_payload
        self.inflight = asyncio.Semaphore(inflight)
        self.role = ""
        self.device_id: str | None = None
        """The paired device behind this connection, if it proved one."""
        self.node_id: str | None = None
        """The node id, for a connection with role `node`."""
        self.scopes: frozenset[str] = frozenset()
        self.seq = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        """The connection is being (or has been) closed."""
        return self._closing or self.transport.is_closing()

    def buffered(self) -> int:
        """Bytes written but not yet taken by the client's socket."""
        return self.transport.get_write_buffer_size()

    def send(self, data: bytes) -> bool:
        """Queue one text frame; a frame that cannot be dropped. False when the connection is
        closing or became a slow consumer (and is now being closed)."""
        if self.closing:
            return False
        if self.buffered() > self.max_buffered:
            self.close_soon(CloseCode.POLICY_VIOLATION, "slow consumer")
            return False
        self.transport.writelines((_text_frame_header(len(data)), data))
        return True

    def send_event(self, body: bytes, *, droppable: bool) -> bool:
        """Queue an event (encoded without `seq`) with this connection's next `seq`.

        A droppable event is skipped when the client is behind; the skipped `seq` shows the
        client the gap (it then re-reads state, as the protocol says)."""
        if self.closing:
            return False
        self.seq += 1
        if droppable and self.buffered() > self.max_buffered:
            return False
        return self.send(with_seq(body, self.seq))

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close with `code` without waiting (safe from any callback); `closed()` waits."""
        if self._closing:
            return
        self._closing = True
        self._close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def release(self, grace_s: float = 1.0) -> None:
        """After the WebSocket is done: give queued bytes (the close frame among them)
        `grace_s` to reach the client, then drop the TCP connection if they have not.

        Without this a client that stopped reading keeps a closing transport, and its
        buffer, alive indefinitely (OpenClaw's close grace is the same 1 s).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # Polled: the transport offers no "drained" event to await (aiohttp owns its protocol).
        while self.buffered() > 0 and not self.transport.is_closing() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self.buffered() > 0:
            self.transport.abort()

    async def closed(self) -> None:
        """Wait for a close started by `close_soon` to finish."""
        if self._close_task is not None:
            await self._close_task

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            # A client that never answers the close frame (or reads nothing at all) would keep
            # a closing transport (and its buffer) alive forever: cut it off.
            self.transport.abort()

    async def close(self, code: int, reason: str = "") -> None:
        """Close with `code` and wait until the close handshake is done (or timed out)."""
        if self._closing:
            return
        self._closing = True
        await self._close(code, reason)
