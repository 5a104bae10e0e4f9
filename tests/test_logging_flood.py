"""A flood of malformed requests neither fills the log with what the attacker sent nor
rotates the security events away (security review, finding 5)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

import aiohttp

from moltis_desktop.core.logging import (
    SECURITY_LOG_NAME,
    RepeatLimiter,
    configure_logging,
    security_event,
)
from tests.conftest import MakeClient, StartGateway

MARK = "ZQXJfloodmark"
"""In every garbage request: no log line may contain it."""
GARBAGE = [
    f"GET /{MARK}\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    f"GET / HTTP/1.1\r\nHost: x\r\nthis line has no colon {MARK}\r\n\r\n".encode(),
    f"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {MARK}\r\n\r\n".encode(),
    f"GET /{MARK} HTTP/9.9\r\n\r\n".encode(),
    f"{MARK} / HTTP/1.1\r\n\r\n".encode(),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK.encode(),
    f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    f"{MARK}\r\n".encode(),
    f"GET / HTTP/1.1\r\nHost: x\r\nX-{MARK}: \x01\x02\x7f\r\n\r\n".encode(),
]
FLOOD_S = 3.0
CONNECTIONS = 16


async def _hammer(port: int, deadline: float, sent: list[int]) -> None:
    i = 0
    while time.monotonic() < deadline:
        payload = GARBAGE[i % len(GARBAGE)]
        i += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        try:
            writer.write(payload)
            await writer.drain()
            sent[0] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await reader.read(65536)  # the 400, then the server closes
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _history(log_file: Path) -> list[str]:
    """Every line of a log file and of its rotated copies."""
    lines: list[str] = []
    for path in sorted(log_file.parent.glob(log_file.name + "*")):
        lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return lines


async def test_a_flood_of_malformed_requests_loses_no_security_event(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    # A small log, so that a flood written out line by line would rotate it within seconds.
    handle = await start_gateway(overrides={"logging": {"max_bytes": 200_000, "backups": 1}})
    log_file = handle.log_file
    security_log = log_file.with_name(SECURITY_LOG_NAME)
    intruder = make_client(handle.url)
    refused = await intruder.connect(token="wrong-token-000000")
    assert refused["ok"] is False
    events = [json.loads(line) for line in security_log.read_text().splitlines()]
    assert [e["fields"]["event"] for e in events] == ["connect.refused"]
    assert events[0]["fields"]["ip"] == "127.0.0.1"
    assert "token mismatch" in events[0]["fields"]["reason"]
    assert any("connect.refused" in line for line in _history(log_file))  # the main log too
    before = log_file.stat().st_size

    sent = [0]
    deadline = time.monotonic() + FLOOD_S
    await asyncio.gather(
        *(_hammer(handle.gateway.state.port, deadline, sent) for _ in range(CONNECTIONS))
    )
    assert sent[0] > 200, sent  # the flood did happen

    # The gateway still answers.
    operator = make_client(handle.url)
    assert (await operator.connect(token=handle.token))["ok"]
    assert (await operator.call("health"))["ok"]

    main = _history(log_file)
    security = _history(security_log)
    # Nothing the attacker sent reached a log, in any form.
    assert not [line for line in main + security if MARK in line]
    # A few lines (one per peer and minute, and a count), not one per request.
    assert not log_file.with_name(log_file.name + ".1").exists()
    grown = log_file.stat().st_size - before
    assert grown < 5_000, grown
    malformed = [json.loads(line) for line in main if "malformed HTTP request" in line]
    assert malformed, "the first malformed request is logged (class and peer only)"
    assert malformed[0]["level"] == "info"
    assert "127.0.0.1" in malformed[0]["message"]
    # The security event is still there, in its own file that only security events reach.
    kinds = [json.loads(line)["fields"]["event"] for line in security]
    assert kinds[0] == "connect.refused"
    assert len(kinds) < 10, kinds  # what the flood caused there, if anything, is counted


async def test_repeated_failed_auth_cannot_flush_the_security_log(
    start_gateway: StartGateway, make_client: MakeClient, http_session: aiohttp.ClientSession
) -> None:
    # Loopback answered at once (not ever more slowly) and locked out after 100 failures.
    auth = {"exempt_loopback": False, "max_failures": 100}
    handle = await start_gateway(overrides={"gateway": {"chat_completions": True, "auth": auth}})
    security_log = handle.log_file.with_name(SECURITY_LOG_NAME)
    for _ in range(20):
        assert (await make_client(handle.url).connect(token="wrong-token-000000"))["ok"] is False

    async def models() -> int:
        headers = {"Authorization": "Bearer wrong-token"}
        async with http_session.get(f"{handle.http}/v1/models", headers=headers) as res:
            return res.status

    statuses = await asyncio.gather(*(models() for _ in range(300)))
    assert statuses.count(401) == 80 and statuses.count(429) == 220, statuses
    events = [json.loads(line)["fields"] for line in security_log.read_text().splitlines()]
    assert [e["event"] for e in events] == [
        "connect.refused",  # 20 refusals, one line
        "auth.failed",  # 80 failures, one line
        "auth.locked_out",
        "auth.rate_limited",  # 220 refusals, one line
    ], events
    assert events[2]["key"] == "127.0.0.1"
    assert security_log.stat().st_size < 2_000


def test_repeats_are_counted_and_reported_when_their_window_ends(tmp_path: Path) -> None:
    now = [0.0]
    limiter = RepeatLimiter(window_s=60.0, budget=3, clock=lambda: now[0])
    assert limiter.check("a") == (True, [])
    for _ in range(5):
        assert limiter.check("a") == (False, [])
    assert limiter.check("b") == (True, [])
    assert limiter.check("c") == (True, [])
    assert limiter.check("d") == (False, [])  # over the budget of distinct keys
    now[0] = 61.0
    allowed, due = limiter.check("a")
    assert allowed
    assert due == [("a", 5), (None, 1)]


def test_security_events_have_their_own_file(tmp_path: Path) -> None:
    log_file = tmp_path / "moltis.log"
    configure_logging(log_file=log_file, console=None, level="warning")
    logging.getLogger("moltis_desktop.gateway").warning("not a security event")
    security_event("pairing.requested", level=logging.INFO, device="d1", ip="10.0.0.2")
    security_event("pairing.requested", level=logging.INFO, device="d1", ip="10.0.0.2")
    security_event("pairing.requested", level=logging.INFO, device="d2", ip="10.0.0.2\n\x00x")
    lines = [json.loads(x) for x in (tmp_path / SECURITY_LOG_NAME).read_text().splitlines()]
    assert [(x["fields"]["device"], x["fields"]["ip"]) for x in lines] == [
        ("d1", "10.0.0.2"),
        ("d2", "10.0.0.2??x"),  # what a client sent, without control characters
    ]
    assert lines[0]["level"] == "info"  # written although the main level is warning
    main = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [x["message"] for x in main] == [
        "not a security event",
        "pairing.requested",  # security events are in the main log too
        "pairing.requested",
    ]
