"""Frames after the handshake: malformed input, limits, scopes and roles at dispatch."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.wsclient import ProtoClient


async def _reply(client: ProtoClient, raw: str | bytes) -> dict[str, object]:
    assert client.ws is not None
    if isinstance(raw, bytes):
        await client.ws.send_bytes(raw)
    else:
        await client.ws.send_str(raw)
    while True:
        frame = await client.recv()
        if frame["type"] == "res":
            return frame


@pytest.mark.parametrize(
    ("raw", "rid", "fragment"),
    [
        ("{not json", "invalid", "not valid JSON"),
        (
            json.dumps({"type": "req", "id": "x1", "method": "health", "foo": 1}),
            "x1",
            "unknown field `foo`",
        ),
        (json.dumps({"type": "req", "id": "x2"}), "x2", "missing required field `method`"),
        (json.dumps({"type": "event", "event": "tick"}), "invalid", "only send `req`"),
        (json.dumps({"type": "req", "id": "", "method": "health"}), "invalid", "`$.id`"),
        (json.dumps([1, 2, 3]), "invalid", "must be a JSON object"),
        (json.dumps({"type": "nope", "id": "x3", "method": "health"}), "x3", "`type` must be"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_stays_open(
    operator: ProtoClient, raw: str, rid: str, fragment: str
) -> None:
    res = await _reply(operator, raw)
    assert res["id"] == rid
    assert res["ok"] is False
    error = res["error"]
    assert isinstance(error, dict)
    assert error["code"] == "INVALID_REQUEST"
    assert str(error["message"]).startswith("invalid request frame")
    assert fragment in str(error["message"])
    assert (await operator.call("health"))["ok"] is True


async def test_binary_frames_are_refused(operator: ProtoClient) -> None:
    res = await _reply(operator, b"\x00\x01")
    assert "binary frames are not supported" in str(res["error"])
    assert (await operator.call("health"))["ok"] is True


async def test_payload_over_the_limit_closes_1009(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(overrides={"gateway": {"max_payload": 4096}})
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=["operator.admin"])
    assert res["payload"]["policy"]["maxPayload"] == 4096
    under = await client.request("system-event", {"text": "x" * 3000})  # under the limit: fine
    assert under["ok"], under
    await client.send_request("health", {"probe": False, "pad": "y" * 5000})
    code, _ = await client.expect_close()
    assert code == 1009
    # The gateway is unharmed.
    other = make_client(handle.url)
    assert (await other.connect(token=handle.token))["ok"]


async def test_unknown_method(
    gateway: GatewayHandle, make_client: MakeClient, operator: ProtoClient
) -> None:
    res = await operator.request("no.such.method")
    assert res["error"] == {"code": "INVALID_REQUEST", "message": "unknown method: no.such.method"}
    reader = make_client(gateway.url)
    await reader.connect(token=gateway.token, scopes=["operator.read"])
    res = await reader.request("no.such.method")
    # As in OpenClaw: authorisation comes first, and an unknown method needs admin.
    assert res["error"]["code"] == "FORBIDDEN"
    assert res["error"]["details"]["missingScope"] == "operator.admin"


@pytest.mark.parametrize(
    ("scopes", "method", "params", "missing"),
    [
        (["operator.read"], "config.set", {"raw": "x = 1"}, "operator.admin"),
        (["operator.read"], "system-event", {"text": "hi"}, "operator.admin"),
        (["operator.pairing"], "status", {}, "operator.read"),
        (["operator.write"], "config.patch", {"raw": "{}"}, "operator.admin"),
        ([], "logs.tail", {}, "operator.read"),
    ],
)
async def test_scope_denial(
    gateway: GatewayHandle,
    make_client: MakeClient,
    scopes: list[str],
    method: str,
    params: dict[str, object],
    missing: str,
) -> None:
    client = make_client(gateway.url)
    await client.connect(token=gateway.token, scopes=scopes)
    res = await client.request(method, params)
    assert res["ok"] is False
    assert res["error"] == {
        "code": "FORBIDDEN",
        "message": f"missing scope: {missing}",
        "details": {"code": "MISSING_SCOPE", "missingScope": missing, "requiredScopes": [missing]},
    }


async def test_write_scope_implies_read(gateway: GatewayHandle, make_client: MakeClient) -> None:
    client = make_client(gateway.url)
    await client.connect(token=gateway.token, scopes=["operator.write"])
    assert "runtimeVersion" in await client.call("status")


async def test_second_connect(
    gateway: GatewayHandle, make_client: MakeClient, operator: ProtoClient
) -> None:
    res = await operator.request("connect", operator.connect_params(token=gateway.token))
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "connect is only valid as the first request",
    }
    assert (await operator.call("health"))["ok"]
    reader = make_client(gateway.url)
    await reader.connect(token=gateway.token, scopes=["operator.read"])
    res = await reader.request("connect", reader.connect_params(token=gateway.token))
    assert res["error"]["code"] == "FORBIDDEN"


async def test_node_role_is_limited_and_repeated_abuse_closes(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    node = make_client(gateway.url)
    res = await node.connect(
        token=gateway.token, role="node", client_id="node-host", mode="node", scopes=[]
    )
    assert res["payload"]["auth"] == {"role": "node", "scopes": []}
    assert (await node.call("health"))["ok"]
    for _ in range(10):
        res = await node.request("status")
        assert res["error"] == {"code": "INVALID_REQUEST", "message": "unauthorized role: node"}
    await node.send_request("status")
    code, reason = await node.expect_close()
    assert (code, reason) == (1008, "repeated unauthorized calls")


async def test_invalid_params_are_refused(operator: ProtoClient) -> None:
    res = await operator.request("logs.tail", {"limit": 0})
    assert res["error"]["code"] == "INVALID_REQUEST"
    assert res["error"]["message"].startswith("invalid logs.tail params:")
    res = await operator.request("config.get", {"extra": 1})
    assert "invalid config.get params" in res["error"]["message"]
    res = await operator.request("system-event", {"text": "   "})
    assert res["error"] == {"code": "INVALID_REQUEST", "message": "text required"}


async def test_client_close_codes_are_handled(
    gateway: GatewayHandle, make_client: MakeClient, operator: ProtoClient
) -> None:
    # OpenClaw clients close with 4000 when ticks stop arriving; the gateway cleans up.
    app = make_client(gateway.url)
    await app.connect(token=gateway.token, client_id="openclaw-linux", mode="ui")
    assert len(gateway.gateway.state.connections) == 2
    assert app.ws is not None
    await app.ws.close(code=4000, message=b"tick timeout")
    for _ in range(100):
        if len(gateway.gateway.state.connections) == 1:
            break
        await asyncio.sleep(0.02)
    assert len(gateway.gateway.state.connections) == 1
    modes = [e["mode"] for e in await operator.call("system-presence")]
    assert modes == ["gateway"]


async def test_a_failing_method_answers_unavailable(
    gateway: GatewayHandle, operator: ProtoClient
) -> None:
    log = gateway.log_file
    log.rename(log.with_name("moved.log"))
    log.mkdir()  # the log path is now unreadable as a file
    res = await operator.request("logs.tail")
    assert res["ok"] is False
    assert res["error"]["code"] == "UNAVAILABLE"
    assert res["error"]["message"].startswith("log read failed:")
    assert (await operator.call("health"))["ok"]
