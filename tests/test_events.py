"""Events: ticks, health and presence pushes, per-connection seq, shutdown before close."""

from __future__ import annotations

import asyncio

from tests.conftest import MakeClient, StartGateway


async def test_ticks_arrive_at_the_policy_interval_with_seq(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(overrides={"gateway": {"tick_interval_ms": 200}})
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=[])
    assert res["payload"]["policy"]["tickIntervalMs"] == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    ticks = [await client.next_event("tick", timeout=2) for _ in range(3)]
    elapsed = loop.time() - started
    assert 0.35 < elapsed < 2.0
    seqs = [t["seq"] for t in ticks]
    assert seqs == sorted(seqs)
    assert seqs[0] >= 1
    assert all(isinstance(t["payload"]["ts"], int) for t in ticks)


async def test_seq_is_per_connection(start_gateway: StartGateway, make_client: MakeClient) -> None:
    handle = await start_gateway(overrides={"gateway": {"tick_interval_ms": 150}})
    first = make_client(handle.url)
    await first.connect(token=handle.token)
    await first.next_event("tick")
    await first.next_event("tick")
    late = make_client(handle.url)
    await late.connect(token=handle.token)
    assert (await late.next_event("tick"))["seq"] == 1


async def test_health_events_carry_state_version(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(overrides={"gateway": {"health_refresh_ms": 200}})
    client = make_client(handle.url)
    await client.connect(token=handle.token)
    one = await client.next_event("health", timeout=3)
    two = await client.next_event("health", timeout=3)
    assert one["payload"]["ok"] is True
    assert two["stateVersion"]["health"] == one["stateVersion"]["health"] + 1
    assert "config" not in one["payload"]  # events carry the schema-exact snapshot


async def test_presence_events_on_app_connect_and_disconnect(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway()
    watcher = make_client(handle.url)
    hello = (await watcher.connect(token=handle.token, scopes=["operator.read"]))["payload"]
    start_version = hello["snapshot"]["stateVersion"]["presence"]
    # A CLI connection is not "present"; an app (mode ui) is.
    cli = make_client(handle.url)
    await cli.connect(token=handle.token)
    app = make_client(handle.url)
    await app.connect(
        token=handle.token,
        client_id="openclaw-linux",
        mode="ui",
        client={"displayName": "laptop app"},
    )
    joined = await watcher.next_event("presence")
    assert joined["stateVersion"]["presence"] == start_version + 1
    assert [e["mode"] for e in joined["payload"]["presence"]] == ["gateway", "ui"]
    assert joined["payload"]["presence"][1]["host"] == "laptop app"
    listed = await watcher.call("system-presence")
    assert {e["mode"] for e in listed} == {"gateway", "ui"}
    await app.close()
    left = await watcher.next_event("presence")
    assert [e["mode"] for e in left["payload"]["presence"]] == ["gateway"]
    assert left["stateVersion"]["presence"] == start_version + 2


async def test_system_event_updates_presence_and_broadcasts(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway()
    admin = make_client(handle.url)
    await admin.connect(token=handle.token, scopes=["operator.admin"])
    watcher = make_client(handle.url)
    await watcher.connect(token=handle.token, scopes=["operator.read"])
    result = await admin.call(
        "system-event",
        {
            "text": "Node: studio-mac (10.0.0.7) · app 1.2.3 · last input 42s ago · mode ui · "
            "reason launch",
            "deviceId": "dev-1",
        },
    )
    assert result == {"ok": True}
    event = await watcher.next_event("presence")
    node = next(e for e in event["payload"]["presence"] if e.get("deviceId") == "dev-1")
    assert node["host"] == "studio-mac"
    assert node["ip"] == "10.0.0.7"
    assert node["version"] == "1.2.3"
    assert node["lastInputSeconds"] == 42
    assert node["mode"] == "ui"
    assert node["reason"] == "launch"
    # A Node line is presence, not a note for the agent.
    assert (await admin.call("status"))["queuedSystemEvents"] == []


async def test_probe_and_node_do_not_get_presence_events(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(overrides={"gateway": {"tick_interval_ms": 300}})
    probe = make_client(handle.url)
    await probe.connect(token=handle.token, mode="probe")
    admin = make_client(handle.url)
    await admin.connect(token=handle.token, scopes=["operator.admin"])
    await admin.call("system-event", {"text": "hello"})
    tick = await probe.next_event("tick", timeout=2)
    assert tick["seq"] == 1  # the presence event neither reached it nor used a seq
    assert "presence" not in [e["event"] for e in probe.events]


async def test_shutdown_event_then_close_1012(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway()
    client = make_client(handle.url)
    await client.connect(token=handle.token, scopes=[])
    stopping = asyncio.create_task(handle.runtime.stop())
    event = await client.next_event("shutdown")
    assert event["payload"] == {"reason": "gateway stopping"}
    assert event["seq"] >= 1
    assert await client.expect_close() == (1012, "service restart")
    await stopping
    assert not handle.gateway.state.ready
