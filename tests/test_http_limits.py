"""Connection limits on the gateway's port (security finding 6, connection exhaustion): the
header timeout (slowloris), the keep-alive timeout, the header size, the open-file limit
and the caps on unauthenticated connections, over real sockets."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from moltis_desktop.config.settings import GatewaySettings
from moltis_desktop.gateway.limits import FRESH_S, UNAUTHENTICATED_PER_IP, connection_caps
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.process import BIN, GatewayProcess, gateway_process
from tests.support.wsclient import ProtoClient

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
"""A request line and its Host header (the rest of the headers to follow)."""
GET = HEAD + b"\r\n"
FAST = {"gateway": {"http": {"header_timeout_ms": 500}}}
"""A header timeout short enough to wait for in a test."""


async def _open(gw: GatewayHandle) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.gateway.state.port)


async def _closed_after(reader: asyncio.StreamReader, limit_s: float) -> float:
    """Seconds until the gateway closes the connection (what it sent before is dropped);
    fails when it is still open after `limit_s`."""
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP response: its status and body (Content-Length framed)."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), body


# ---------------------------------------------------------------- header timeout


async def test_slowloris_half_request_line_is_closed(start_gateway: StartGateway) -> None:
    gw = await start_gateway(overrides=FAST)
    reader, writer = await _open(gw)
    writer.write(b"GET /healthz HT")
    elapsed = await _closed_after(reader, 5)
    assert 0.4 <= elapsed <= 3.0
    writer.close()


async def test_headers_dribbled_byte_by_byte_are_closed(start_gateway: StartGateway) -> None:
    # Sending keeps the connection busy but does not restart the clock.
    gw = await start_gateway(overrides=FAST)
    reader, writer = await _open(gw)
    started = time.monotonic()

    async def dribble() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(dribble())
    try:
        await _closed_after(reader, 5)
    finally:
        task.cancel()
    assert time.monotonic() - started <= 3.0
    writer.close()


async def test_silent_connection_is_closed(start_gateway: StartGateway) -> None:
    gw = await start_gateway(overrides=FAST)
    reader, writer = await _open(gw)
    assert 0.4 <= await _closed_after(reader, 5) <= 3.0
    writer.close()


async def test_next_request_on_a_kept_alive_connection_has_the_timeout_too(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(overrides=FAST)  # keep-alive stays at its 30 s default
    reader, writer = await _open(gw)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    await asyncio.sleep(0.8)  # idle longer than the header timeout: that is keep-alive's
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    writer.write(b"GET /hea")
    assert 0.4 <= await _closed_after(reader, 5) <= 3.0
    writer.close()


async def test_slow_body_is_not_a_slow_header(start_gateway: StartGateway) -> None:
    # The 405 is answered at once; aiohttp then reads (and drops) the body, which arrives
    # over twice the header timeout, and the connection serves the next request.
    gw = await start_gateway(overrides=FAST)
    reader, writer = await _open(gw)
    writer.write(b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n")
    assert (await _response(reader))[0] == 405
    for _ in range(10):
        writer.write(b"x")
        await asyncio.sleep(0.1)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    writer.close()


# ---------------------------------------------------------------- keep-alive


async def test_idle_keepalive_connection_is_closed_after_the_timeout(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        overrides={"gateway": {"http": {"header_timeout_ms": 5000, "keepalive_timeout_ms": 1000}}}
    )
    reader, writer = await _open(gw)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    await asyncio.sleep(0.5)
    writer.write(GET)  # still open half way through
    assert (await _response(reader))[0] == 200
    assert 0.8 <= await _closed_after(reader, 4) <= 2.5
    writer.close()


def test_default_keepalive_and_header_timeouts() -> None:
    http = GatewaySettings().http
    assert 15_000 <= http.keepalive_timeout_ms <= 75_000
    assert http.header_timeout_ms == 10_000


# ---------------------------------------------------------------- header size


TOO_LARGE = {
    "a 200 KB field": HEAD + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    "a 9 KB field": HEAD + b"X-Big: " + b"a" * 9_000 + b"\r\n\r\n",
    # Fields each within their limit, 200 KB in all.
    "99 fields of 2 KB": HEAD
    + b"".join(b"X-F%d: %s\r\n" % (i, b"b" * 2000) for i in range(99))
    + b"\r\n",
    "110 fields": b"GET /healthz HTTP/1.1\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(110))
    + b"\r\n",
    "a 20 KB target": b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("head", TOO_LARGE.values(), ids=TOO_LARGE.keys())
async def test_too_large_headers_get_431_and_the_gateway_keeps_answering(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession, head: bytes
) -> None:
    with gateway.log_file.open() as log:
        log.seek(0, 2)
        reader, writer = await _open(gateway)
        writer.write(head)
        status, _ = await _response(reader)
        assert status == 431
        await _closed_after(reader, 5)
        writer.close()
        async with http_session.get(f"{gateway.http}/healthz") as resp:
            assert resp.status == 200
        logged = log.read()
    assert "Traceback" not in logged
    assert "ERROR" not in logged


async def test_a_client_still_sending_after_the_431_is_not_reset(gateway: GatewayHandle) -> None:
    # A reset (closing with unread data) can destroy the answer before the client reads
    # it, on some systems: the gateway reads and drops the rest for a moment instead.
    reader, writer = await _open(gateway)
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 100_000)
    assert (await _response(reader))[0] == 431
    for _ in range(5):
        writer.write(b"a" * 100_000)
        await writer.drain()
        await asyncio.sleep(0.05)
    assert await reader.read() == b""  # the gateway's end of the stream, not a reset
    writer.close()


async def test_headers_within_the_limits_are_served(gateway: GatewayHandle) -> None:
    reader, writer = await _open(gateway)
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"c" * 500) for i in range(90))  # ~46 KB
    writer.write(HEAD + fields + b"\r\n")
    assert (await _response(reader))[0] == 200
    writer.close()


# ---------------------------------------------------------------- caps


def _silent_sockets(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def _wait_closed_count(socks: list[socket.socket], expected: int) -> list[bool]:
    """Which of `socks` the gateway closed, once `expected` of them are (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        closed = [_is_closed(s) for s in socks]
        if sum(closed) >= expected or time.monotonic() > deadline:
            return closed
        await asyncio.sleep(0.05)


async def test_per_ip_cap_evicts_the_oldest_silent_socket_not_the_owner(
    gateway: GatewayHandle, operator: ProtoClient, make_client: MakeClient
) -> None:
    cap = gateway.gateway.connection_limits.per_ip
    assert cap == UNAUTHENTICATED_PER_IP
    flood = _silent_sockets(gateway.gateway.state.port, cap + 40)
    try:
        closed = await _wait_closed_count(flood, 40)
        # Once they are no longer fresh, the oldest 40 go; the newest `cap` stay open
        # (until the header timeout).
        assert closed == [True] * 40 + [False] * cap
        assert gateway.gateway.connection_limits.count("127.0.0.1") == cap
        # The authenticated client connected before the flood was not touched...
        assert (await operator.call("health"))["ok"]
        # ...and a new one gets in (making room in turn).
        client = make_client(gateway.url)
        assert (await client.connect(token=gateway.token))["ok"]
        assert (await client.call("health"))["ok"]
        assert (await _wait_closed_count(flood, 41))[40]
        # Authenticated, it no longer counts: the flood is back at the cap without it.
        assert gateway.gateway.connection_limits.count("127.0.0.1") == cap - 1
    finally:
        for sock in flood:
            sock.close()


async def test_a_burst_of_parallel_requests_over_the_per_ip_cap_is_served(
    gateway: GatewayHandle,
) -> None:
    # A client firing many requests at once opens all its connections before sending on
    # any: fresh connections are not taken for silent ones.
    limits = gateway.gateway.connection_limits
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get() -> int:
            async with session.get(f"{gateway.http}/healthz") as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(get() for _ in range(3 * limits.per_ip)))
    assert statuses == [200] * (3 * limits.per_ip)
    assert limits.evicted == 0


async def test_a_bearer_request_lifts_its_connection_out_of_the_caps(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(overrides={"gateway": {"chat_completions": True}})
    limits = gateway.gateway.connection_limits
    models = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    wrong_reader, wrong_writer = await _open(gateway)
    wrong_writer.write(models + b"Authorization: Bearer wrong-token-0123456789\r\n\r\n")
    assert (await _response(wrong_reader))[0] == 401
    assert limits.count("127.0.0.1") == 1  # a wrong token lifts nothing
    reader, writer = await _open(gateway)
    writer.write(models + b"Authorization: Bearer %s\r\n\r\n" % gateway.token.encode())
    assert (await _response(reader))[0] == 200
    assert limits.count("127.0.0.1") == 1  # the wrong token's connection only
    wrong_writer.close()
    # Kept-alive connections that each got an answer, newer than the authenticated one:
    # at the cap the oldest idle goes, and that would be the authenticated one if it
    # still counted.
    served = []
    for _ in range(limits.per_ip + 5):
        conn = await _open(gateway)
        conn[1].write(GET)
        assert (await _response(conn[0]))[0] == 200
        served.append(conn)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    for served_reader, served_writer in served[:4]:  # the oldest made room
        assert await served_reader.read() == b""
        served_writer.close()
    for _, served_writer in served[4:]:
        served_writer.close()
    writer.close()


async def test_the_cap_never_evicts_a_connection_with_a_request_in_flight(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    # WebSockets that have not sent `connect` yet are requests in flight: silent sockets
    # go first, whatever their age, and when only those are left a newcomer is refused.
    limits = gateway.gateway.connection_limits
    limits.per_ip = 8  # a cap the test can fill with pending WebSockets (32 at most per IP)
    port = gateway.gateway.state.port
    pending = [make_client(gateway.url) for _ in range(8)]
    for client in pending[:4]:
        await client.open()
    flood = _silent_sockets(port, 6)
    assert await _wait_closed_count(flood, 2) == [True] * 2 + [False] * 4
    for client in pending[4:]:
        await client.open()
    assert await _wait_closed_count(flood, 6) == [True] * 6
    reader, writer = await _open(gateway)
    assert (await _response(reader))[0] == 503
    writer.close()
    for client in pending:
        assert (await client.connect(token=gateway.token))["ok"]
    assert limits.count("127.0.0.1") == 0
    reader, writer = await _open(gateway)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    writer.close()
    for sock in flood:
        sock.close()


# ---------------------------------------------------------------- open-file limit


@contextmanager
def _limited_gateway(home: Path, soft: int, hard: int) -> Iterator[GatewayProcess]:
    """`moltis gateway` started under `ulimit -n` soft/hard (headless: uvloop)."""
    script = f'ulimit -Sn {soft} && ulimit -Hn {hard} && exec "$0" gateway'
    with gateway_process(home, command=("bash", "-c", script, str(BIN / "moltis"))) as gw:
        yield gw


def _nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc/<pid>/limits")


def _healthz(port: int, source: str = "127.0.0.1") -> tuple[int, float]:
    """GET /healthz on a fresh connection: its status and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0)) as s:
        s.sendall(GET)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, f"closed without an answer after {data!r}"
            data += chunk
    return int(data.split(b" ", 2)[1]), time.monotonic() - started


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc/<pid>/limits")
def test_soft_fd_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    with _limited_gateway(tmp_path / "home", soft=256, hard=4096) as gw:
        assert _nofile(gw.proc.pid) == (4096, 4096)


def _fds_in_use(pid: int) -> int:
    fd_dir = Path(f"/proc/{pid}/fd")
    return len(list(fd_dir.iterdir())) if fd_dir.exists() else 16


def test_healthz_answers_with_240_idle_sockets_under_ulimit_256(tmp_path: Path) -> None:
    # 256 is macOS's default for GUI apps. Without the caps, silent sockets held the
    # gateway's last file descriptors and it answered no one (237 did it on a Mac): at
    # least 240 here, and as many as it takes to reach the limit on this machine.
    with _limited_gateway(tmp_path / "home", soft=256, hard=256) as gw:
        count = max(240, 256 - _fds_in_use(gw.proc.pid) + 8)
        flood = _silent_sockets(gw.port, count)
        try:
            status, took = _healthz(gw.port)
            assert status == 200
            assert took < 2.0
            # The oldest made room: no more than the total cap are open, and once they are
            # no longer fresh, no more than the per-IP cap.
            per_ip, total = connection_caps(256)
            assert sum(_is_closed(s) for s in flood) >= count - total
            deadline = time.monotonic() + FRESH_S + 2
            while sum(not _is_closed(s) for s in flood) > per_ip:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            for sock in flood:
                sock.close()
        assert "Traceback" not in gw.output()


def test_total_cap_under_ulimit_256(tmp_path: Path) -> None:
    # Four IPs, each under the per-IP cap, together over the total one: each newcomer
    # makes room at the expense of the IP holding the most, oldest first.
    per_ip, total = connection_caps(256)
    with _limited_gateway(tmp_path / "home", soft=256, hard=256) as gw:
        ips = [f"127.0.0.{n}" for n in range(2, 6)]
        flood = {ip: _silent_sockets(gw.port, per_ip - 10, ip) for ip in ips}
        try:
            status, took = _healthz(gw.port, "127.0.0.9")
            assert status == 200
            assert took < 2.0
            deadline = time.monotonic() + 3
            while sum(not _is_closed(s) for socks in flood.values() for s in socks) > total - 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # The /healthz connection took one place. Each IP keeps its newest, the same
            # number give or take one.
            left = {}
            for ip, socks in flood.items():
                closed = [_is_closed(s) for s in socks]
                left[ip] = closed.count(False)
                assert closed == [True] * (len(socks) - left[ip]) + [False] * left[ip]
            assert sum(left.values()) == total - 1
            assert max(left.values()) - min(left.values()) <= 1
        finally:
            for socks in flood.values():
                for sock in socks:
                    sock.close()
