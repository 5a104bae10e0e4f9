"""Device pairing: loopback devices paired silently, others approved by an operator,
per-role device tokens (issued once, stored hashed) used instead of the shared secret,
rotation, revocation, removal, and a store that survives a restart."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moltis_desktop.core.clock import ManualClock
from moltis_desktop.pairing.store import PENDING_TTL_MS, PairingStore
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.devices import device_id
from tests.support.wsclient import ProtoClient

READ = ["operator.read"]


async def connect_device(
    client: ProtoClient, key: Ed25519PrivateKey, *, token: str, scopes: list[str] = READ
) -> dict[str, Any]:
    return await client.connect_signed(key, secret=token, token=token, scopes=scopes)


async def admin(handle: GatewayHandle, make_client: MakeClient) -> ProtoClient:
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=["operator.admin", "operator.pairing"])
    assert res["ok"], res
    return client


async def test_a_loopback_device_is_paired_silently_and_gets_its_token(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    key = Ed25519PrivateKey.generate()
    res = await connect_device(make_client(gateway.url), key, token=gateway.token)
    assert res["ok"], res
    token = res["payload"]["auth"]["deviceToken"]
    assert len(token) == 32 and res["payload"]["auth"]["scopes"] == READ
    # Once: the next connect with the shared secret gets no new token.
    again = await connect_device(make_client(gateway.url), key, token=gateway.token)
    assert "deviceToken" not in again["payload"]["auth"]
    # The device token works in place of the shared secret.
    own = await connect_device(make_client(gateway.url), key, token=token)
    assert own["ok"], own
    assert own["payload"]["auth"]["scopes"] == READ
    # ... and only with this device's key.
    other = await connect_device(
        make_client(gateway.url), Ed25519PrivateKey.generate(), token=token
    )
    assert other["ok"] is False
    listed = (await (await admin(gateway, make_client)).request("device.pair.list", {}))["payload"]
    (paired,) = listed["paired"]
    assert paired["deviceId"] == device_id(key) and paired["roles"] == ["operator"]
    assert "tokenHash" not in json.dumps(listed) and token not in json.dumps(listed)
    # Stored hashed, mode 0600.
    file = gateway.runtime.paths.state_dir / "devices" / "paired.json"
    assert token not in file.read_text() and stat.S_IMODE(file.stat().st_mode) == 0o600


async def test_others_wait_for_approval(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway("[gateway]\nauto_approve_loopback_devices = false\n")
    operator = await admin(handle, make_client)
    key = Ed25519PrivateKey.generate()
    phone = make_client(handle.url)
    res = await connect_device(phone, key, token=handle.token)
    assert res["error"]["code"] == "NOT_PAIRED"
    assert res["error"]["message"] == "pairing required"
    request_id = res["error"]["details"]["requestId"]
    assert (await phone.expect_close())[0] == 1008
    event = await operator.next_event("device.pair.requested")
    assert event["payload"]["requestId"] == request_id
    assert event["payload"]["deviceId"] == device_id(key)
    pending = (await operator.request("device.pair.list", {}))["payload"]["pending"]
    assert [p["requestId"] for p in pending] == [request_id]
    approved = await operator.request("device.pair.approve", {"requestId": request_id})
    assert approved["ok"], approved
    resolved = await operator.next_event("device.pair.resolved")
    assert resolved["payload"] == {**resolved["payload"], "requestId": request_id,
                                   "decision": "approved"}  # fmt: skip
    res = await connect_device(make_client(handle.url), key, token=handle.token)
    assert res["ok"], res
    token = res["payload"]["auth"]["deviceToken"]

    # A rejected device stays out.
    stranger = Ed25519PrivateKey.generate()
    res = await connect_device(make_client(handle.url), stranger, token=handle.token)
    rid = res["error"]["details"]["requestId"]
    assert (await operator.request("device.pair.reject", {"requestId": rid}))["ok"]
    res = await connect_device(make_client(handle.url), stranger, token=handle.token)
    assert res["error"]["code"] == "NOT_PAIRED" and res["error"]["details"]["requestId"] != rid
    bad = await operator.request("device.pair.approve", {"requestId": rid})
    assert "unknown or expired" in bad["error"]["message"]

    # Rotate: the old token stops working, the new one works; never wider than approved.
    dev = device_id(key)
    rotated = await operator.request("device.token.rotate", {"deviceId": dev, "role": "operator"})
    new_token = rotated["payload"]["token"]
    assert (await connect_device(make_client(handle.url), key, token=token))["ok"] is False
    assert (await connect_device(make_client(handle.url), key, token=new_token))["ok"]
    wider = await operator.request(
        "device.token.rotate", {"deviceId": dev, "role": "operator", "scopes": ["operator.admin"]}
    )
    assert "cannot widen" in wider["error"]["message"]
    # Revoke: the token is refused.
    assert (await operator.request("device.token.revoke", {"deviceId": dev, "role": "operator"}))[
        "ok"
    ]
    assert (await connect_device(make_client(handle.url), key, token=new_token))["ok"] is False
    # Remove: its connections close, and it must pair again.
    connected = make_client(handle.url)
    assert (await connect_device(connected, key, token=handle.token))["ok"]
    assert (await operator.request("device.pair.remove", {"deviceId": dev}))["ok"]
    assert (await connected.expect_close())[0] == 1008
    res = await connect_device(make_client(handle.url), key, token=handle.token)
    assert res["error"]["code"] == "NOT_PAIRED"
    # Pairing needs the pairing scope.
    reader = make_client(handle.url)
    await reader.connect(token=handle.token, scopes=["operator.read"])
    res = await reader.request("device.pair.list", {})
    assert res["error"]["details"]["missingScope"] == "operator.pairing"
    # Each request, decision and removal is a security event, in its own log.
    security = handle.log_file.with_name("security.log").read_text().splitlines()
    steps = [(e["event"], e.get("device")) for e in (json.loads(x)["fields"] for x in security)]
    assert [s for s in steps if s[0].startswith(("pairing.", "device."))] == [
        ("pairing.requested", dev),
        ("pairing.approved", dev),
        ("pairing.requested", device_id(stranger)),
        ("pairing.rejected", device_id(stranger)),
        ("pairing.requested", device_id(stranger)),
        ("device.removed", dev),
        ("pairing.requested", dev),
    ]


def test_the_store_survives_a_restart_and_requests_expire(tmp_path: Path) -> None:
    clock = ManualClock()
    store = PairingStore(tmp_path, clock)
    device = {"deviceId": "d1", "publicKey": "pk", "role": "operator", "scopes": READ}
    request, new = store.request(device)
    assert new and store.request(device) == (request, False)
    store.approve(request["requestId"])
    issued = store.issue("d1", "operator", ("operator.read",))
    late, _ = store.request({**device, "deviceId": "d2"})
    # A new process reads the same state back (the files are whole: written atomically).
    again = PairingStore(tmp_path, clock)
    assert again.check_token("d1", "operator", issued.token) == ("operator.read",)
    assert again.is_paired("d1", "pk", "operator", ("operator.read",))
    assert not again.is_paired("d1", "other-key", "operator", ())
    assert not again.is_paired("d1", "pk", "operator", ("operator.admin",))  # an upgrade
    assert late["requestId"] in again.pending
    clock.advance(PENDING_TTL_MS / 1000 + 1)
    again.prune()
    assert again.pending == {}
    # A damaged file is reported and read as empty, not a crash.
    (tmp_path / "devices" / "paired.json").write_text("{not json")
    assert PairingStore(tmp_path, clock).paired == {}


async def test_moltis_devices_cli(tmp_path: Path, make_client: MakeClient) -> None:
    import asyncio

    from tests.support.process import BIN, gateway_process

    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "moltis.toml").write_text(
        "[gateway]\nauto_approve_loopback_devices = false\n"
    )

    async def moltis(env: dict[str, str], url: str, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "moltis"), *args, env={**env, "MOLTIS_URL": url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    with gateway_process(home, token="cli-devices-token-1") as gw:
        key = Ed25519PrivateKey.generate()
        res = await connect_device(make_client(gw.url), key, token="cli-devices-token-1")
        request_id = res["error"]["details"]["requestId"]
        rc, out, err = await moltis(gw.env, gw.url, "devices", "list")
        assert rc == 0, err
        assert "Pending (1):" in out and request_id in out and "No paired devices." in out
        rc, out, err = await moltis(gw.env, gw.url, "devices", "approve", request_id)
        assert rc == 0 and f"{request_id}: paired" in out, err
        assert (await connect_device(make_client(gw.url), key, token="cli-devices-token-1"))["ok"]
        dev = device_id(key)
        rc, out, err = await moltis(gw.env, gw.url, "devices", "rotate", dev)
        assert rc == 0, err
        token = out.split(": ", 1)[1].split()[0]
        assert (await connect_device(make_client(gw.url), key, token=token))["ok"]
        rc, out, err = await moltis(gw.env, gw.url, "devices", "revoke", dev)
        assert rc == 0 and "revoked" in out, err
        assert (await connect_device(make_client(gw.url), key, token=token))["ok"] is False
        rc, out, err = await moltis(gw.env, gw.url, "devices", "remove", dev)
        assert rc == 0 and "removed" in out, err
        rc, out, err = await moltis(gw.env, gw.url, "devices", "approve", "no-such-request")
        assert rc == 1 and "unknown or expired" in err
