"""The connect handshake over a real WebSocket: challenge, connect, hello-ok, and every way
it can fail (with OpenClaw's error shapes and close codes)."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.devices import signed_device
from tests.support.schema import FrameValidator


async def test_good_handshake_hello_ok(
    gateway: GatewayHandle, make_client: MakeClient, frame_validator: FrameValidator
) -> None:
    client = make_client(gateway.url)
    challenge = await client.open()
    assert challenge["payload"]["nonce"]
    res = await client.connect(token=gateway.token, scopes=["operator.read"])
    assert res["ok"] is True
    hello = res["payload"]
    assert hello["type"] == "hello-ok"
    assert hello["protocol"] == 4
    assert hello["auth"] == {"role": "operator", "scopes": ["operator.read"]}
    assert hello["policy"] == {
        "maxPayload": 512 * 1024,
        "maxBufferedBytes": 1536 * 1024,
        "tickIntervalMs": 30_000,
    }
    assert hello["features"]["capabilities"] == ["published-model-catalog"]
    methods = hello["features"]["methods"]
    for name in (
        "health",
        "status",
        "system-presence",
        "system-event",
        "last-heartbeat",
        "logs.tail",
        "channels.status",
        "config.get",
        "config.set",
        "config.patch",
        "config.apply",
        "config.schema",
        "agents.list",
        "models.list",
    ):
        assert name in methods
    assert "connect" not in methods
    assert {"tick", "shutdown", "health", "presence"} <= set(hello["features"]["events"])
    snapshot = hello["snapshot"]
    assert snapshot["presence"][0]["mode"] == "gateway"
    assert snapshot["health"]["ok"] is True
    assert snapshot["sessionDefaults"]["mainSessionKey"] == "agent:main:main"
    assert frame_validator.checked["hello-ok"] == 1
    # The connection is usable right after hello.
    assert (await client.call("health"))["ok"] is True


async def test_every_advertised_method_is_in_the_published_schema(
    gateway: GatewayHandle, operator: object
) -> None:
    from tests.support.schema import method_scope

    for spec in gateway.gateway.state.methods:
        if not spec.advertised:
            continue
        published = method_scope(spec.name)
        if spec.name.startswith("moltis."):
            # Our own extensions live under their own prefix, never under an OpenClaw name.
            assert published is None, f"{spec.name} shadows an OpenClaw method"
            continue
        assert published is not None, f"{spec.name} is not an OpenClaw method"
        # health is listed as read in the schema but OpenClaw serves it to every connection;
        # "dynamic" scopes depend on the params, so any operator scope may be declared.
        assert spec.scope == published or spec.name == "health" or published == "dynamic", (
            spec.name,
            spec.scope,
            published,
        )


@pytest.mark.parametrize(
    ("min_p", "max_p", "expected"), [(3, 4, 4), (4, 4, 4), (3, 3, 3), (1, 9, 4)]
)
async def test_version_negotiation(
    gateway: GatewayHandle, make_client: MakeClient, min_p: int, max_p: int, expected: int
) -> None:
    client = make_client(gateway.url)
    res = await client.connect(token=gateway.token, min_protocol=min_p, max_protocol=max_p)
    assert res["ok"], res
    assert res["payload"]["protocol"] == expected


async def test_bad_version_is_refused_with_1002(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = make_client(gateway.url)
    res = await client.connect(token=gateway.token, min_protocol=5, max_protocol=6)
    assert res["ok"] is False
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "protocol mismatch",
        "details": {
            "code": "PROTOCOL_MISMATCH",
            "clientMinProtocol": 5,
            "clientMaxProtocol": 6,
            "expectedProtocol": 4,
            "minimumProbeProtocol": 3,
        },
    }
    assert await client.expect_close() == (1002, "protocol mismatch")


async def test_bad_token_is_refused_with_1008(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = make_client(gateway.url)
    res = await client.connect(token="wrong-token")
    assert res["ok"] is False
    error = res["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("unauthorized: gateway token mismatch")
    assert error["details"] == {
        "code": "AUTH_TOKEN_MISMATCH",
        "authReason": "token_mismatch",
        "canRetryWithDeviceToken": False,
        "recommendedNextStep": "update_auth_credentials",
    }
    code, reason = await client.expect_close()
    assert code == 1008
    assert reason.startswith("unauthorized: gateway token mismatch")
    assert len(reason.encode()) <= 120
    # The wrong token never reaches the log; the refusal does.
    text = gateway.log_file.read_text()
    assert "wrong-token" not in text
    assert "connect.refused" in text


async def test_no_credentials_needs_device_identity(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = make_client(gateway.url)
    res = await client.connect()
    assert res["error"] == {
        "code": "NOT_PAIRED",
        "message": "device identity required",
        "details": {"code": "DEVICE_IDENTITY_REQUIRED"},
    }
    assert (await client.expect_close())[0] == 1008


async def test_handshake_timeout(start_gateway: StartGateway, make_client: MakeClient) -> None:
    handle = await start_gateway(overrides={"gateway": {"handshake_timeout_ms": 300}})
    client = make_client(handle.url)
    await client.open()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client.expect_close() == (1008, "handshake timeout")
    assert 0.25 <= loop.time() - started < 3


async def test_first_frame_must_be_connect(gateway: GatewayHandle, make_client: MakeClient) -> None:
    client = make_client(gateway.url)
    await client.open()
    res = await client.request("health")
    assert res["ok"] is False
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "invalid handshake: first request must be connect",
    }
    assert await client.expect_close() == (1008, "invalid handshake: first request must be connect")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("this is not json", "invalid request frame: not valid JSON"),
        (json.dumps({"type": "event", "event": "x"}), "invalid request frame"),
        (json.dumps([1, 2]), "invalid request frame"),
    ],
)
async def test_invalid_first_frame_closes(
    gateway: GatewayHandle, make_client: MakeClient, raw: str, reason: str
) -> None:
    client = make_client(gateway.url)
    await client.open()
    assert client.ws is not None
    await client.ws.send_str(raw)
    assert await client.expect_close() == (1008, reason)


async def test_invalid_connect_params(gateway: GatewayHandle, make_client: MakeClient) -> None:
    client = make_client(gateway.url)
    await client.open()
    params = client.connect_params(token=gateway.token)
    params["surprise"] = True
    res = await client.request("connect", params)
    assert res["error"]["code"] == "INVALID_REQUEST"
    assert res["error"]["message"].startswith("invalid connect params:")
    assert "surprise" in res["error"]["message"]
    code, _reason = await client.expect_close()
    assert code == 1008


async def test_invalid_role(gateway: GatewayHandle, make_client: MakeClient) -> None:
    client = make_client(gateway.url)
    res = await client.connect(token=gateway.token, role="emperor")
    assert res["error"] == {"code": "INVALID_REQUEST", "message": "invalid role"}
    assert await client.expect_close() == (1008, "invalid role")


async def test_oversized_preauth_frame_closes_1009(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = make_client(gateway.url)
    await client.open()
    params = client.connect_params(token=gateway.token, userAgent="x" * 70_000)
    await client.send_request("connect", params)
    code, _ = await client.expect_close()
    assert code == 1009


async def test_probe_gets_no_scopes_but_may_call_health(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = make_client(gateway.url)
    res = await client.connect(
        token=gateway.token, mode="probe", min_protocol=3, scopes=["operator.read"]
    )
    assert res["payload"]["auth"] == {"role": "operator", "scopes": []}
    assert res["payload"]["snapshot"]["presence"] == []
    assert (await client.call("health"))["ok"] is True
    denied = await client.request("status")
    assert denied["error"] == {
        "code": "FORBIDDEN",
        "message": "missing scope: operator.read",
        "details": {
            "code": "MISSING_SCOPE",
            "missingScope": "operator.read",
            "requiredScopes": ["operator.read"],
        },
    }


async def test_local_clients_with_the_token_keep_their_scopes(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    for client_id, mode in (
        ("gateway-client", "backend"),
        ("test", "test"),
        ("openclaw-linux", "ui"),
    ):
        client = make_client(gateway.url)
        res = await client.connect(
            token=gateway.token,
            client_id=client_id,
            mode=mode,
            scopes=["operator.read", "operator.write"],
        )
        assert res["payload"]["auth"]["scopes"] == ["operator.read", "operator.write"]
    # The same client with our own page's Origin (the web app) keeps them too: the token
    # is what proves who it is (OpenClaw lets token-authenticated clients skip device ids).
    browser = make_client(gateway.url)
    await browser.open(headers={"Origin": gateway.http})
    res = await browser.connect(token=gateway.token, scopes=["operator.admin"])
    assert res["payload"]["auth"]["scopes"] == ["operator.admin"]
    # Without the token, the same page gets nothing at all.
    stranger = make_client(gateway.url)
    await stranger.open(headers={"Origin": gateway.http})
    res = await stranger.connect(token="wrong", scopes=["operator.admin"])
    assert res["ok"] is False


async def test_password_mode(start_gateway: StartGateway, make_client: MakeClient) -> None:
    handle = await start_gateway(
        '[gateway.auth]\nmode = "password"\n',
        token=None,
        env={"MOLTIS_PASSWORD": "correct horse battery"},
    )
    good = make_client(handle.url)
    assert (await good.connect(password="correct horse battery"))["ok"]
    bad = make_client(handle.url)
    res = await bad.connect(password="wrong password")
    assert res["error"]["details"]["code"] == "AUTH_PASSWORD_MISMATCH"
    assert res["error"]["message"].startswith("unauthorized: gateway password mismatch")
    assert (await bad.expect_close())[0] == 1008


async def test_auth_mode_none_accepts_loopback(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway('[gateway.auth]\nmode = "none"\n', token=None)
    client = make_client(handle.url)
    res = await client.connect(scopes=["operator.read"])
    assert res["ok"], res
    assert res["payload"]["snapshot"]["authMode"] == "none"


async def test_failed_attempts_are_throttled(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    # Browsers (requests with an Origin) are never exempt, so loopback can show the lockout.
    handle = await start_gateway(
        overrides={"gateway": {"auth": {"max_failures": 3, "lockout_s": 60}}}
    )
    origin = {"Origin": handle.http}
    for _ in range(3):
        client = make_client(handle.url)
        await client.open(headers=origin)
        res = await client.connect(token="nope", client_id="webchat-ui", mode="webchat")
        assert res["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    client = make_client(handle.url)
    await client.open(headers=origin)
    res = await client.connect(token=handle.token, client_id="webchat-ui", mode="webchat")
    error = res["error"]
    assert error["details"]["code"] == "AUTH_RATE_LIMITED"
    assert error["message"] == (
        "unauthorized: too many failed authentication attempts (retry later)"
    )
    assert error["retryable"] is True
    assert 0 < error["retryAfterMs"] <= 60_000
    assert (await client.expect_close())[0] == 1008


async def test_loopback_failures_are_slowed_not_locked_out(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(3):
        client = make_client(gateway.url)
        await client.open()
        started = loop.time()
        res = await client.connect(token="nope")
        delays.append(loop.time() - started)
        assert res["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    assert delays[0] >= 0.2
    assert delays[2] >= 0.9  # 250 ms, 500 ms, 1 s: doubling
    ok = make_client(gateway.url)
    assert (await ok.connect(token=gateway.token))["ok"]


async def test_foreign_browser_origin_is_refused(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    client = make_client(gateway.url)
    await client.open(headers={"Origin": "https://evil.example"})
    res = await client.connect(token=gateway.token)
    assert res["error"]["code"] == "INVALID_REQUEST"
    assert res["error"]["details"] == {
        "code": "CONTROL_UI_ORIGIN_NOT_ALLOWED",
        "reason": "origin not allowed",
    }
    assert (await client.expect_close())[0] == 1008


async def test_allowed_origin_from_config(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway('[gateway.cors]\nallowed_origins = ["https://app.example"]\n')
    client = make_client(handle.url)
    await client.open(headers={"Origin": "https://app.example"})
    res = await client.connect(token=handle.token, client_id="webchat-ui", mode="webchat")
    assert res["ok"], res
    assert res["payload"]["auth"]["scopes"] == ["operator.read"]


async def test_signed_device_is_verified(gateway: GatewayHandle, make_client: MakeClient) -> None:
    key = Ed25519PrivateKey.generate()
    scopes = ["operator.read"]
    client = make_client(gateway.url)
    challenge = (await client.open())["payload"]
    device = signed_device(
        key, nonce=challenge["nonce"], ts=challenge["ts"], token=gateway.token, scopes=scopes
    )
    res = await client.connect(token=gateway.token, scopes=scopes, device=device)
    assert res["ok"], res
    assert res["payload"]["auth"]["scopes"] == scopes

    forged = make_client(gateway.url)
    challenge = (await forged.open())["payload"]
    device = signed_device(
        key,
        nonce=challenge["nonce"],
        ts=challenge["ts"],
        token=gateway.token,
        scopes=["operator.read"],
    )
    res = await forged.connect(token=gateway.token, scopes=["operator.admin"], device=device)
    assert res["error"]["details"] == {
        "code": "DEVICE_AUTH_SIGNATURE_INVALID",
        "reason": "device signature invalid",
    }
    assert (await forged.expect_close())[0] == 1008

    replay = make_client(gateway.url)
    challenge = (await replay.open())["payload"]
    device = signed_device(
        key, nonce="not-the-challenge", ts=challenge["ts"], token=gateway.token, scopes=scopes
    )
    res = await replay.connect(token=gateway.token, scopes=scopes, device=device)
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_NONCE_MISMATCH"
