"""Floods, slow readers, duplicate idempotency keys: the gateway stays up and fair."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.wsclient import ProtoClient


async def test_flood_is_answered_in_full_and_others_stay_responsive(
    gateway: GatewayHandle, make_client: MakeClient, operator: ProtoClient
) -> None:
    flooder = make_client(gateway.url)
    await flooder.connect(token=gateway.token)
    assert flooder.ws is not None
    count = 3000
    frames = [json.dumps({"type": "req", "id": f"f{i}", "method": "health"}) for i in range(count)]

    async def flood() -> None:
        for frame in frames:
            await flooder.ws.send_str(frame)  # type: ignore[union-attr]

    async def read_all() -> list[str]:
        ids = []
        while len(ids) < count:
            frame = await flooder.recv()
            if frame["type"] == "res":
                assert frame["ok"], frame
                ids.append(frame["id"])
        return ids

    reader = asyncio.create_task(read_all())
    sender = asyncio.create_task(flood())
    # Meanwhile another client's requests are answered promptly.
    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        assert (await operator.call("status"))["runtimeVersion"]
        latencies.append(time.perf_counter() - started)
    await sender
    ids = await asyncio.wait_for(reader, 30)
    assert ids == [f"f{i}" for i in range(count)]  # all answered, in order
    assert max(latencies) < 1.0, latencies
    assert (await operator.call("health"))["ok"]


async def test_client_that_does_not_read_is_closed_as_slow_consumer(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(overrides={"gateway": {"max_buffered_bytes": 64 * 1024}})
    slow = make_client(handle.url)
    await slow.connect(token=handle.token, scopes=["operator.read"])
    assert slow.ws is not None
    # Shrink the client's receive buffer so the gateway's writes back up quickly.
    sock = slow.ws._response.connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.ws._response.connection.transport.pause_reading()  # type: ignore[union-attr]
    # Each answer is ~20 KB: far more than the kernel's socket buffers and the 64 KiB budget.
    frame = json.dumps({"type": "req", "id": "s", "method": "config.schema"})
    gateway = handle.gateway.state
    for _ in range(2000):
        if not gateway.connections:
            break
        await slow.ws.send_str(frame)
        await asyncio.sleep(0)
    for _ in range(100):
        if not gateway.connections:
            break
        await asyncio.sleep(0.05)
    assert not gateway.connections, "the slow consumer is still connected"
    slow.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    # Everyone else is fine.
    other = make_client(handle.url)
    assert (await other.connect(token=handle.token))["ok"]
    assert (await other.call("health"))["ok"]


async def test_droppable_events_skip_a_slow_client_leaving_a_seq_gap(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(overrides={"gateway": {"max_buffered_bytes": 64 * 1024}})
    watcher = make_client(handle.url)
    await watcher.connect(token=handle.token, scopes=["operator.read"])
    assert watcher.ws is not None
    transport = watcher.ws._response.connection.transport  # type: ignore[union-attr]
    transport.pause_reading()
    admin = make_client(handle.url)
    await admin.connect(token=handle.token, scopes=["operator.admin"])
    # ~30 KB presence events: 400 of them are far more than the socket buffers hold.
    padding = "x" * 30_000
    for i in range(400):
        await admin.call(
            "system-event",
            {
                "text": f"Node: box{i} (10.0.0.9) · mode ui",
                "instanceId": "node-1",
                "tags": [padding],
            },
        )
    assert handle.gateway.state.connections, "droppable events must not disconnect anyone"
    transport.resume_reading()
    seqs = []
    while True:  # read until the gateway has nothing more queued for us
        try:
            frame = await watcher.recv(timeout=1.0)
        except TimeoutError:
            break
        if frame["type"] == "event" and frame["event"] == "presence":
            seqs.append(frame["seq"])
    assert seqs == sorted(seqs)
    assert len(seqs) < 400, "some events were dropped while the client was behind"
    # Caught up, the next event arrives numbered after every one it missed.
    await admin.call("system-event", {"text": "Node: last (10.0.0.1) · mode ui"})
    watcher.events.clear()
    assert (await watcher.next_event("presence"))["seq"] == 401
    assert (await watcher.call("health"))["ok"]


async def test_duplicate_idempotency_keys_run_once(
    gateway: GatewayHandle, make_client: MakeClient, operator: ProtoClient
) -> None:
    params = {"text": "remember the milk", "idempotencyKey": "idem-1"}
    first = await operator.send_request("system-event", params)
    second = await operator.send_request("system-event", params)  # while the first runs
    other = make_client(gateway.url)
    await other.connect(token=gateway.token, scopes=["operator.admin"])
    a = await operator.response(first)
    b = await operator.response(second)
    c = await other.request("system-event", params)  # a retry from another connection
    assert a["payload"] == b["payload"] == c["payload"] == {"ok": True}
    assert (a["id"], b["id"]) == (first, second)
    status = await operator.call("status")
    assert status["queuedSystemEvents"] == ["remember the milk"]
    await operator.call("system-event", {"text": "remember the milk", "idempotencyKey": "idem-2"})
    status = await operator.call("status")
    assert status["queuedSystemEvents"] == ["remember the milk", "remember the milk"]


async def test_many_clients_at_once(gateway: GatewayHandle, make_client: MakeClient) -> None:
    clients = [make_client(gateway.url) for _ in range(100)]
    for batch in range(0, 100, 25):
        results = await asyncio.gather(
            *(c.connect(token=gateway.token) for c in clients[batch : batch + 25])
        )
        assert all(r["ok"] for r in results)

    async def five(client: ProtoClient) -> list[bool]:
        return [(await client.call("health"))["ok"] for _ in range(5)]

    results = await asyncio.gather(*(five(c) for c in clients))
    assert sum(len(r) for r in results) == 500
    assert all(all(r) for r in results)


async def test_too_many_unauthenticated_sockets_from_one_ip(
    gateway: GatewayHandle, make_client: MakeClient, http_session: object
) -> None:
    import aiohttp

    idle = [make_client(gateway.url) for _ in range(32)]
    await asyncio.gather(*(c.open() for c in idle))  # challenge received, no connect sent
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await make_client(gateway.url).open()
    assert refused.value.status == 503
    # Finishing a handshake frees a place.
    assert (await idle[0].connect(token=gateway.token))["ok"]
    assert (await make_client(gateway.url).connect(token=gateway.token))["ok"]
