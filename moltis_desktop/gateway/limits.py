"""Connection limits on the gateway's port: what keeps silent, slow or oversized clients
from using up the process's file descriptors, memory or sockets.

- `raise_fd_limit`: the soft limit on open files raised to the hard limit at start (macOS
  gives GUI apps 256).
- Keep-alive: an idle connection is closed `gateway.http.keepalive_timeout_ms` after its
  last response (aiohttp's default is an hour).
- Header timeout: a request's headers must be complete `gateway.http.header_timeout_ms`
  after its first byte (or after connecting), or the connection is closed (slowloris).
- Header size: lines and fields of at most 8 KiB, 100 headers, 64 KiB in all; more gets a
  431 and the connection closed.
- Caps on unauthenticated connections, per IP and in all: a connection counts until a
  request on it passes authentication (`mark_authenticated`). At a cap the oldest idle
  connection is closed to make room (see `ConnectionLimits`), so a flood of silent sockets
  cannot lock the owner out.

aiohttp (3.14) has options for the keep-alive and the size of lines, fields and the header
count, but none for a header timeout, a total header size or a connection cap: those are
hand-written here, in a `RequestHandler` subclass built by a `web.Server` subclass that a
`web.AppRunner` subclass hands to `TCPSite` (`_make_server` is the runner's own hook for
making its server).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from moltis_desktop.config.settings import HttpSettings
from moltis_desktop.gateway.owner_socket import peer_is_owner

_LOGGER = logging.getLogger(__name__)
_AIOHTTP_SERVER_LOG = logging.getLogger("aiohttp.server")

MAX_LINE_BYTES = 8 * 1024
"""Longest request line (method, target and version) accepted, in bytes."""
MAX_FIELD_BYTES = 8 * 1024
"""Longest header field (name and value) accepted, in bytes."""
MAX_HEADERS = 100
"""Most header fields accepted in one request."""
MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of request line and headers together accepted in one request (without it,
100 fields of 8 KiB make 800 KiB per request)."""

UNAUTHENTICATED_PER_IP = 64
"""Unauthenticated connections one IP may hold at once, fresh ones aside (a browser opens 6
per host; the WebSocket pre-auth cap, `ws.MAX_PREAUTH_SOCKETS_PER_IP`, is 32 and fits
inside). Never more than half the total cap."""
UNAUTHENTICATED_TOTAL = 512
"""Unauthenticated connections the gateway holds at once, from all IPs together; never more
than `1 / FD_SHARE` of the open-file limit."""
FD_SHARE = 2
"""The caps leave at least this share of the open-file limit to everything else (files,
authenticated clients, the agent's outgoing connections): total cap <= soft limit / 2."""
MIN_TOTAL = 8
"""The total cap never goes below this, however low the open-file limit."""
MACOS_OPEN_MAX = 10240
"""macOS's `OPEN_MAX`: the soft limit used when the hard limit is unlimited (setrlimit
refuses RLIM_INFINITY there, and anything above `kern.maxfilesperproc`)."""

LINGER_S = 2.0
"""After a 431 the gateway reads and drops what the client still sends for up to this long
before it closes the connection (so that the answer is not lost to a reset)."""

FRESH_S = 1.0
"""For this long after it opens a connection is not closed to make room for another from
the same IP: its request may still be on its way."""

_CAP_WARNING_INTERVAL_S = 60.0


# ----------------------------------------------------------------------- open files


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files to the hard limit (to `MACOS_OPEN_MAX` when that
    is unlimited or refused). Returns the soft limit in force afterwards; None when there
    is none to speak of (Windows, or unlimited)."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_NOFILE
        _LOGGER.debug("no open-file limit to raise on this platform")
        return None
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == infinity:
        _LOGGER.debug("open-file limit: unlimited")
        return None
    targets = [] if hard == infinity else [hard]
    if hard == infinity or (sys.platform == "darwin" and hard > MACOS_OPEN_MAX):
        targets.append(MACOS_OPEN_MAX)
    for target in targets:
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            _LOGGER.debug("cannot raise the open-file limit to %d: %s", target, exc)
            continue
        _LOGGER.debug(
            "raised the open-file limit from %d to %d (hard limit %s)", soft, target, hard
        )
        return target
    _LOGGER.debug("open-file limit stays at %d (hard limit %s)", soft, hard)
    return soft


def connection_caps(fd_limit: int | None) -> tuple[int, int]:
    """(per IP, total) caps on unauthenticated connections under the open-file limit."""
    total = UNAUTHENTICATED_TOTAL
    if fd_limit is not None:
        total = max(MIN_TOTAL, min(total, fd_limit // FD_SHARE))
    return min(UNAUTHENTICATED_PER_IP, total // 2), total


# ----------------------------------------------------------------------- the caps


class ConnectionLimits:
    """The unauthenticated connections, oldest first, per IP and in all; makes room at a
    cap by closing idle ones.

    Which connection goes, at either cap: the oldest that never got a request through
    (silent, or slow to send its headers), else the oldest idle between requests (a server
    may close an idle keep-alive connection at any time). Never one with a request in
    flight (a WebSocket in its handshake, a response being written): when only those are
    left, the newcomer is refused with a 503.

    - Per IP, a connection younger than `FRESH_S` is spared: its request may be on its way
      (a client firing many requests at once opens all its connections first). While one
      is, the IP may go over its cap; `FRESH_S` later it is brought back down.
    - In all, nothing is spared (the file descriptors are at stake), and the connection
      goes from the IP that holds the most: a flood from one address does not push out
      the connections of another.
    """

    def __init__(self, per_ip: int, total: int) -> None:
        self.per_ip = per_ip
        """Cap on one IP's unauthenticated connections."""
        self.total = total
        """Cap on all unauthenticated connections."""
        self.evicted = 0
        """Connections closed to make room (since start)."""
        self.refused = 0
        """Connections refused because nothing could be closed (since start)."""
        self._all: dict[GuardedRequestHandler, None] = {}
        self._by_ip: dict[str, dict[GuardedRequestHandler, None]] = {}
        self._trims: dict[str, asyncio.TimerHandle] = {}
        self._warned_at = -_CAP_WARNING_INTERVAL_S

    def count(self, ip: str | None = None) -> int:
        """Unauthenticated connections open (from `ip`, when given)."""
        return len(self._all) if ip is None else len(self._by_ip.get(ip, ()))

    def admit(self, conn: GuardedRequestHandler) -> bool:
        """Track a new connection, closing another at a cap; False when it must be refused
        (every connection it could replace has a request in flight)."""
        peers = self._by_ip.get(conn.ip)
        if peers is not None and len(peers) >= self.per_ip:
            victim = _victim(peers, spare_after=conn.opened_at - FRESH_S)
            if victim is not None:
                self._evict(victim, conn.ip)
            elif any(c.never_served for c in peers):  # fresh ones: a burst, not a flood
                self._trim_later(conn.ip)
            else:
                self._refuse(conn.ip)
                return False
        if len(self._all) >= self.total:
            heaviest = max(self._by_ip.values(), key=len)
            victim = _victim(heaviest) or _victim(self._all)
            if victim is None:
                self._refuse(None)
                return False
            self._evict(victim, None)
        self._all[conn] = None
        self._by_ip.setdefault(conn.ip, {})[conn] = None
        return True

    def forget(self, conn: GuardedRequestHandler) -> None:
        """Stop counting `conn` (authenticated, or gone)."""
        if conn not in self._all:
            return
        del self._all[conn]
        peers = self._by_ip[conn.ip]
        del peers[conn]
        if not peers:
            del self._by_ip[conn.ip]

    def _evict(self, victim: GuardedRequestHandler, cap_ip: str | None) -> None:
        self._warn(cap_ip)
        self.evicted += 1
        self.forget(victim)
        victim.evict()

    def _refuse(self, cap_ip: str | None) -> None:
        self._warn(cap_ip)
        self.refused += 1

    def _trim_later(self, ip: str) -> None:
        """Bring `ip` back down to its cap once its fresh connections are not fresh."""
        if ip not in self._trims:
            loop = asyncio.get_running_loop()
            self._trims[ip] = loop.call_later(FRESH_S, self._trim, ip)

    def _trim(self, ip: str) -> None:
        del self._trims[ip]
        now = asyncio.get_running_loop().time()
        while (peers := self._by_ip.get(ip)) is not None and len(peers) > self.per_ip:
            victim = _victim(peers, spare_after=now - FRESH_S, silent_only=True)
            if victim is None:
                if any(c.never_served for c in peers):
                    self._trim_later(ip)
                return
            self._evict(victim, ip)

    def _warn(self, ip: str | None) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._warned_at < _CAP_WARNING_INTERVAL_S:
            return
        self._warned_at = now
        if ip is None:
            _LOGGER.warning(
                "%d unauthenticated connections open (the cap): closing idle ones to make "
                "room, refusing newcomers when none is idle",
                self.total,
            )
        else:
            _LOGGER.warning(
                "%d unauthenticated connections from %s (its cap): closing its idle ones to "
                "make room, refusing newcomers when none is idle",
                self.per_ip,
                ip,
            )


def _victim(
    group: dict[GuardedRequestHandler, None],
    *,
    spare_after: float | None = None,
    silent_only: bool = False,
) -> GuardedRequestHandler | None:
    """The connection of `group` to close: the oldest that never got a request through
    (opened before `spare_after`, when given), else the oldest idle between requests
    (unless `silent_only`); None when every one has a request in flight (or is spared)."""
    idle: GuardedRequestHandler | None = None
    for conn in group:  # oldest first
        if conn.never_served:
            if spare_after is None or conn.opened_at <= spare_after:
                return conn
        elif idle is None and conn.idle:
            idle = conn
    return None if silent_only else idle


def is_owner(request: web.Request) -> bool:
    """The request came over the owner socket from a process of the gateway's own user
    (the kernel's peer credentials, checked when the connection opened). Nothing the
    client sends can make this true: it is a property of the connection."""
    handler = request.protocol
    return isinstance(handler, GuardedRequestHandler) and handler.owner


def mark_authenticated(request: web.Request) -> None:
    """The connection `request` came on passed authentication: it no longer counts against
    the caps on unauthenticated connections, and is never evicted to make room."""
    handler = request.protocol
    if isinstance(handler, GuardedRequestHandler):
        handler.authenticated()


# ----------------------------------------------------------------------- the protocol

_END_OF_HEADERS = b"\r\n\r\n"


def _raw_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TOO_LARGE = _raw_response(431, "Request Header Fields Too Large", "request headers too large\n")
_BUSY = _raw_response(503, "Service Unavailable", "too many connections; try again\n")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP protocol, plus a header timeout, a total header size and the caps.

    The header timer is armed when the connection opens and when a new request starts to
    arrive on a kept-alive one, and disarmed when the parser has a full request line and
    headers. It is never cancelled: when it fires after being disarmed (or re-armed) it
    does nothing (or waits again), so a request costs no timer of its own.
    """

    __slots__ = (
        "_answered",
        "_body",
        "_discarding",
        "_header_bytes",
        "_header_deadline",
        "_header_handle",
        "_header_tail",
        "_header_timeout_s",
        "_limits",
        "_tracked",
        "ip",
        "opened_at",
        "owner",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        limits: ConnectionLimits,
        header_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.ip = ""
        """The peer's address (the key of the per-IP cap)."""
        self.opened_at = 0.0
        """When the connection opened (the loop's clock)."""
        self.owner = False
        """Over the owner socket, from a process of this user (see `owner_socket.py`)."""
        self._limits = limits
        self._tracked = False
        self._answered = 0
        self._header_timeout_s = header_timeout_s
        self._header_deadline: float | None = None
        self._header_handle: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_tail = b""
        self._body: StreamReader | None = None
        self._discarding = False

    # -- state the caps look at

    @property
    def never_served(self) -> bool:
        """No request has arrived in full yet (silent, or still sending headers)."""
        return self._request_count == 0

    @property
    def idle(self) -> bool:
        """No request in flight (parsed and not yet answered)."""
        return self._request_count == self._answered

    def authenticated(self) -> None:
        if self._tracked:
            self._tracked = False
            self._limits.forget(self)

    def evict(self) -> None:
        """Close the connection to make room for another."""
        self._tracked = False
        _LOGGER.debug("closing an idle connection from %s to make room", self.ip)
        self.force_close()

    # -- aiohttp's protocol hooks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
            # The owner socket: the kernel says who the peer is. Another user's process is
            # closed before a byte of it is read; the owner's is authenticated already.
            if not peer_is_owner(sock):
                self.force_close()
                transport.close()
                return
            self.owner = True
            self.ip = "unix"
            self.opened_at = self._loop.time()
            self._arm_header_timer()
            return
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else ""
        self.opened_at = self._loop.time()
        self._arm_header_timer()
        if self._limits.admit(self):
            self._tracked = True
        else:
            _LOGGER.debug("refusing a connection from %s: every one at the cap is busy", self.ip)
            self._answer_and_close(_BUSY)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._tracked:
            self._tracked = False
            self._limits.forget(self)
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._upgraded:  # a WebSocket (or a pending upgrade): no more HTTP requests
            super().data_received(data)
            return
        if self._header_deadline is None and data and (self._body is None or self._body.is_eof()):
            self._arm_header_timer()  # the first bytes of the next request
        if self._header_deadline is not None:
            seen = self._header_bytes + len(data)
            if seen > MAX_HEADER_BYTES and not self._headers_end_in(data):
                self._refuse_headers()
                return
            self._header_bytes = seen
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._header_deadline = None
            self._header_bytes = 0
            self._header_tail = b""
            self._body = self._messages[-1][1] if self._messages else None
        elif self._header_deadline is not None:
            self._header_tail = (self._header_tail + data)[-3:]

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # A request the parser refused (status 400 from aiohttp's parse path) is the
        # client's mistake, not ours: answered without aiohttp's ERROR and traceback.
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message
        )
        # Through aiohttp's logger, whose flood guard (core/logging.py) turns it into one
        # line per peer a minute, with the error's class and never the request's bytes.
        _AIOHTTP_SERVER_LOG.warning("Error handling request from %s", request.remote, exc_info=exc)
        response = web.Response(
            status=431 if too_large else 400,
            text="request headers too large\n" if too_large else "bad request\n",
        )
        response.force_close()
        return response

    # -- the header timer

    def _arm_header_timer(self) -> None:
        loop = self._loop
        self._header_deadline = deadline = loop.time() + self._header_timeout_s
        if self._header_handle is None:
            self._header_handle = loop.call_at(deadline, self._header_timer_fired)

    def _header_timer_fired(self) -> None:
        self._header_handle = None
        deadline = self._header_deadline
        if deadline is None or self.transport is None:
            return
        loop = self._loop
        now = loop.time()
        if now < deadline or not self.idle:
            # Re-armed since, or a request is still being answered (the next one is
            # pipelined behind it): wait again.
            later = deadline if now < deadline else now + self._header_timeout_s
            self._header_deadline = later
            self._header_handle = loop.call_at(later, self._header_timer_fired)
            return
        _LOGGER.debug(
            "closing a connection from %s: no complete request headers within %.1f s",
            self.ip,
            self._header_timeout_s,
        )
        self.force_close()

    def _headers_end_in(self, data: bytes) -> bool:
        """The headers end within `MAX_HEADER_BYTES` in this chunk (a body may follow)."""
        room = max(0, MAX_HEADER_BYTES - self._header_bytes)
        return _END_OF_HEADERS in self._header_tail + data[:room]

    def _answer_and_close(self, response: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(response)
        self.force_close()  # the transport sends what is buffered, then closes

    def _refuse_headers(self) -> None:
        """Answer 431 and close, reading (and dropping) what the client still sends for a
        moment first: closing with unread data sends a reset, which can destroy the answer
        before the client reads it."""
        _LOGGER.debug("request headers from %s over %d bytes", self.ip, MAX_HEADER_BYTES)
        transport = self.transport
        if transport is None:
            return
        self._header_deadline = None
        self._discarding = True  # `data_received` drops everything from now on
        transport.write(_TOO_LARGE)
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(LINGER_S, self.force_close)


class GuardedServer(web.Server):
    """aiohttp's low-level server, making `GuardedRequestHandler`s with the limits."""

    def __init__(
        self,
        handler: Any,
        *,
        request_factory: Any,
        limits: ConnectionLimits,
        settings: Callable[[], HttpSettings],
        **handler_kwargs: Any,
    ) -> None:
        super().__init__(handler, request_factory=request_factory, **handler_kwargs)
        self.limits = limits
        self._settings = settings
        self._handler_kwargs = handler_kwargs

    def __call__(self) -> RequestHandler:
        http = self._settings()
        return GuardedRequestHandler(
            self,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            header_timeout_s=http.header_timeout_ms / 1000,
            keepalive_timeout=http.keepalive_timeout_ms / 1000,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            **self._handler_kwargs,
        )


class GuardedAppRunner(web.AppRunner):
    """An `AppRunner` whose server is a `GuardedServer`."""

    def __init__(
        self,
        app: web.Application,
        *,
        limits: ConnectionLimits,
        settings: Callable[[], HttpSettings],
        shutdown_timeout: float = 60.0,
        **handler_kwargs: Any,
    ) -> None:
        super().__init__(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._limits = limits
        self._settings = settings
        self._handler_kwargs = handler_kwargs

    async def _make_server(self) -> web.Server:
        stock = await super()._make_server()  # runs the app's startup and freezes it
        return GuardedServer(
            stock.request_handler,
            request_factory=stock.request_factory,
            limits=self._limits,
            settings=self._settings,
            **self._handler_kwargs,
        )
