"""Nodes over the real protocol: registration with a command allowlist, node.list /
describe / rename, node.invoke → node.invoke.request → node.invoke.result (timeouts,
idempotency, errors), node.event, surface upgrades through node.pair.*, wake words, and a
node kept away from operator methods."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.devices import device_id
from tests.support.wsclient import ProtoClient

ADMIN = ["operator.admin"]


async def node_connect(
    handle: GatewayHandle,
    make_client: MakeClient,
    key: Ed25519PrivateKey,
    commands: list[str],
) -> tuple[ProtoClient, dict[str, Any]]:
    client = make_client(handle.url)
    res = await client.connect_signed(
        key, secret=handle.token,
        token=handle.token, role="node", scopes=[], client_id="node-host", mode="node",
        client={"displayName": "Build Box"}, caps=["system"], commands=commands,
        permissions={"notifications": True}, pathEnv="/usr/bin",
    )  # fmt: skip
    return client, res


async def answer(node: ProtoClient, result: Any = None, *, ok: bool = True) -> dict[str, Any]:
    """Wait for one node.invoke.request and answer it."""
    request = (await node.next_event("node.invoke.request"))["payload"]
    params: dict[str, Any] = {"id": request["id"], "nodeId": request["nodeId"], "ok": ok}
    if ok:
        params["payloadJSON"] = json.dumps(result)
    else:
        params["error"] = {"code": "BOOM", "message": "it broke"}
    assert (await node.call("node.invoke.result", params))["matched"] is True
    return request


async def test_node_invoke_round_trip(gateway: GatewayHandle, make_client: MakeClient) -> None:
    key = Ed25519PrivateKey.generate()
    node, res = await node_connect(
        gateway, make_client, key, ["system.which", "system.run", "camera.snap", "made.up"]
    )
    assert res["ok"], res
    assert res["payload"]["auth"]["role"] == "node"
    wake = await node.next_event("voicewake.changed")
    assert wake["payload"]["triggers"]
    node_id = device_id(key)
    operator = make_client(gateway.url)
    await operator.connect(token=gateway.token, scopes=ADMIN)

    (entry,) = (await operator.call("node.list", {}))["nodes"]
    assert entry["nodeId"] == node_id and entry["connected"] and entry["paired"]
    # system.run is not allowed by default; unknown commands never are.
    assert entry["commands"] == ["system.which", "camera.snap"]
    assert entry["approvalState"] == "approved" and entry["displayName"] == "Build Box"
    presence = await operator.call("system-presence", {})
    assert any(p.get("mode") == "node" and p.get("deviceId") == node_id for p in presence)

    call = asyncio.ensure_future(
        operator.request("node.invoke", {"nodeId": node_id, "command": "system.which",
                                         "params": {"bins": ["sh"]}, "idempotencyKey": "k1"})
    )  # fmt: skip
    request = await answer(node, {"bins": {"sh": "/bin/sh"}})
    assert json.loads(request["paramsJSON"]) == {"bins": ["sh"]}
    assert request["idempotencyKey"] == "k1"
    res = await call
    assert res["ok"], res
    assert res["payload"]["payload"] == {"bins": {"sh": "/bin/sh"}}
    # The same idempotency key gets the same answer without asking the node again.
    again = await operator.request(
        "node.invoke", {"nodeId": node_id, "command": "system.which",
                        "params": {"bins": ["sh"]}, "idempotencyKey": "k1"}
    )  # fmt: skip
    assert again["payload"] == res["payload"]
    assert not [e for e in node.events if e["event"] == "node.invoke.request"]

    # The node's error comes back as the call's error.
    call = asyncio.ensure_future(
        operator.request("node.invoke", {"nodeId": node_id, "command": "camera.snap",
                                         "idempotencyKey": "k2"})
    )  # fmt: skip
    await answer(node, ok=False)
    res = await call
    assert res["error"]["message"] == "it broke" and res["error"]["details"]["code"] == "BOOM"
    # A node that does not answer in time.
    res = await operator.request(
        "node.invoke", {"nodeId": node_id, "command": "camera.snap", "timeoutMs": 200,
                        "idempotencyKey": "k3"}
    )  # fmt: skip
    assert res["error"]["details"]["code"] == "NODE_INVOKE_TIMEOUT"
    # Refused commands say why.
    res = await operator.request(
        "node.invoke", {"nodeId": node_id, "command": "system.run", "idempotencyKey": "k4"}
    )
    assert res["error"]["details"]["code"] == "COMMAND_NOT_ALLOWED"
    assert "allow_commands" in res["error"]["message"]
    res = await operator.request(
        "node.invoke", {"nodeId": "nope", "command": "x", "idempotencyKey": "k5"}
    )
    assert res["error"]["details"]["code"] == "NODE_NOT_CONNECTED"
    # system.which needs admin; write alone is not enough.
    writer = make_client(gateway.url)
    await writer.connect(token=gateway.token, scopes=["operator.write"])
    res = await writer.request(
        "node.invoke", {"nodeId": node_id, "command": "system.which", "idempotencyKey": "k6"}
    )
    assert res["error"]["details"]["missingScope"] == "operator.admin"

    # node.event, describe, rename.
    ev = await node.call("node.event", {"event": "node.host.stats", "payloadJSON": '{"cpu":1}'})
    assert ev == {"ok": True, "event": "node.host.stats", "handled": True}
    described = await operator.call("node.describe", {"nodeId": node_id})
    assert described["events"] == ["node.host.stats"] and described["invokes"] >= 3
    assert described["declaredCommands"][-1] == "made.up"
    await operator.call("node.rename", {"nodeId": node_id, "displayName": "Kitchen Pi"})
    (entry,) = (await operator.call("node.list", {}))["nodes"]
    assert entry["displayName"] == "Kitchen Pi"

    # A node may not call operator methods.
    res = await node.request("chat.send", {"sessionKey": "main", "message": "hi",
                                           "idempotencyKey": "x"})  # fmt: skip
    assert res["error"]["message"] == "unauthorized role: node"
    res = await node.request("node.list", {})
    assert res["error"]["message"] == "unauthorized role: node"

    # Disconnected: listed as paired, not connected; a pending call fails at once.
    node.events.clear()  # the unanswered request of the timeout above
    call = asyncio.ensure_future(
        operator.request("node.invoke", {"nodeId": node_id, "command": "camera.snap",
                                         "idempotencyKey": "k7"})
    )  # fmt: skip
    await node.next_event("node.invoke.request")
    await node.close()
    res = await call
    assert res["error"]["details"]["code"] == "NODE_DISCONNECTED"
    (entry,) = (await operator.call("node.list", {}))["nodes"]
    assert entry["connected"] is False and entry["paired"] is True


async def test_new_commands_wait_for_approval(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway('[gateway.nodes]\nallow_commands = ["system.run"]\n')
    key = Ed25519PrivateKey.generate()
    node, res = await node_connect(handle, make_client, key, ["camera.snap"])
    assert res["ok"], res
    await node.close()
    operator = make_client(handle.url)
    await operator.connect(token=handle.token, scopes=["operator.pairing", "operator.read"])
    # It comes back offering more: the new command stays off until approved.
    node, res = await node_connect(handle, make_client, key, ["camera.snap", "system.run"])
    assert res["ok"], res
    requested = (await operator.next_event("node.pair.requested"))["payload"]
    assert requested["commands"] == ["camera.snap", "system.run"]
    assert requested["requiredApproveScopes"] == ["operator.pairing", "operator.admin"]
    (entry,) = (await operator.call("node.list", {}))["nodes"]
    assert entry["commands"] == ["camera.snap"] and entry["approvalState"] == "pending-approval"
    listed = await operator.call("node.pair.list", {})
    assert [p["requestId"] for p in listed["pending"]] == [requested["requestId"]]
    # system.run needs admin to approve.
    res = await operator.request("node.pair.approve", {"requestId": requested["requestId"]})
    assert res["error"]["details"]["missingScope"] == "operator.admin"
    owner = make_client(handle.url)
    await owner.connect(token=handle.token, scopes=ADMIN)
    await owner.call("node.pair.approve", {"requestId": requested["requestId"]})
    (entry,) = (await owner.call("node.list", {}))["nodes"]
    assert entry["commands"] == ["camera.snap", "system.run"]
    assert entry["approvalState"] == "approved"
    # Denied commands stay off whatever was approved.
    await owner.call(
        "config.patch",
        {"raw": '{"gateway": {"nodes": {"deny_commands": ["system.run"]}}}',
         "baseHash": (await owner.call("config.get", {}))["hash"]},
    )  # fmt: skip
    res = await owner.request(
        "node.invoke", {"nodeId": device_id(key), "command": "system.run", "idempotencyKey": "d"}
    )
    assert res["error"]["details"]["code"] == "COMMAND_DENIED"
    # node.pair.remove takes the node role away and closes its connection.
    await owner.call("node.pair.remove", {"nodeId": device_id(key)})
    assert await node.expect_close() == (1008, "node removed")
    assert (await owner.call("node.list", {}))["nodes"] == []


async def test_wake_words_reach_nodes(gateway: GatewayHandle, make_client: MakeClient) -> None:
    node, res = await node_connect(gateway, make_client, Ed25519PrivateKey.generate(), [])
    assert res["ok"], res
    first = await node.next_event("voicewake.changed")
    operator = make_client(gateway.url)
    await operator.connect(token=gateway.token, scopes=["operator.write"])
    assert (await operator.call("voicewake.get", {}))["triggers"] == first["payload"]["triggers"]
    set_ = await operator.call("voicewake.set", {"triggers": ["  Hey  Moltis ", "hey moltis", ""]})
    assert set_ == {"triggers": ["Hey Moltis"]}
    changed = await node.next_event("voicewake.changed")
    assert changed["payload"] == {"triggers": ["Hey Moltis"]}
    saved = json.loads((gateway.gateway.state.state_dir / "voicewake.json").read_text())
    assert saved == {"triggers": ["Hey Moltis"]}
