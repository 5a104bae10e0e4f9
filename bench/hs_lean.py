"""Sequential handshakes with a minimal client, to measure what the gateway itself can do.

gwbench's aiohttp client spends ~0.8 ms of CPU per handshake on its own side, which caps a
sequential run near 1,000/s whatever the server does. This client speaks just enough
WebSocket (RFC 6455: upgrade, masked text frames, close) over raw asyncio streams that its
own cost is small, so the figure reflects the gateway. It works against any OpenClaw-protocol
gateway (device-less cli/cli connect with a shared token, as gwbench does).

    .venv/bin/python bench/hs_lean.py --url ws://127.0.0.1:18789 --token T [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time
import uuid
from urllib.parse import urlsplit


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def handshake(host: str, port: int, token: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    if not status.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(status[:80])
    opcode, challenge = await _read_frame(reader)
    assert b"connect.challenge" in challenge
    connect = {
        "type": "req",
        "id": "1",
        "method": "connect",
        "params": {
            "minProtocol": 4,
            "maxProtocol": 4,
            "client": {
                "id": "cli",
                "version": "hs-lean",
                "platform": "linux",
                "mode": "cli",
                "instanceId": str(uuid.uuid4()),
            },
            "caps": [],
            "auth": {"token": token},
            "role": "operator",
            "scopes": ["operator.read"],
        },
    }
    writer.write(_frame(json.dumps(connect).encode()))
    while True:
        opcode, data = await _read_frame(reader)
        if opcode == 0x1 and b'"type":"res"' in data.replace(b" ", b""):
            if b'"ok":true' not in data.replace(b" ", b""):
                raise RuntimeError(data[:200])
            break
    writer.write(_frame(struct.pack("!H", 1000), opcode=0x8))
    while True:
        opcode, _ = await _read_frame(reader)
        if opcode == 0x8:
            break
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    for _ in range(50):
        await handshake(host, port, args.token)
    latencies = []
    cpu0, started = time.process_time(), time.perf_counter()
    for _ in range(args.count):
        t0 = time.perf_counter()
        await handshake(host, port, args.token)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    latencies.sort()
    result = {
        "handshakes": args.count,
        "hs_per_s": round(args.count / wall, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        "client_cpu_pct": round(100 * (time.process_time() - cpu0) / wall, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
