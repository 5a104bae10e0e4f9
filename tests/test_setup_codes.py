"""Setup codes and bootstrap tokens (what a phone scans), and the device-proof and scope
rules that guard pairing: replayed or stale signatures, a key that doesn't match its id,
spent or expired codes, scope upgrades without approval, and the pairing rate limit."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moltis_desktop.pairing.bootstrap import OPERATOR_FULL
from moltis_desktop.pairing.identity import (
    DeviceProofError,
    SignedConnect,
    verify_device_proof,
)
from moltis_desktop.pairing.setupcode import SetupCodeError, decode
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.devices import device_id, signed_device
from tests.support.schema import validator
from tests.support.wsclient import ProtoClient

NO_AUTO = "[gateway]\nauto_approve_loopback_devices = false\n"


async def admin(handle: GatewayHandle, make_client: MakeClient) -> ProtoClient:
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=["operator.admin"])
    assert res["ok"], res
    return client


async def with_code(
    client: ProtoClient,
    key: Ed25519PrivateKey,
    bootstrap: str,
    *,
    role: str = "node",
    scopes: list[str] | None = None,
) -> dict[str, Any]:
    """Connect as a phone that scanned a setup code (a signed device + the bootstrap token)."""
    mode = "node" if role == "node" else "ui"
    return await client.connect_signed(
        key,
        secret=bootstrap,
        role=role,
        scopes=scopes or [],
        client_id="node-host" if role == "node" else "openclaw-ios",
        mode=mode,
        client={"displayName": "Test Phone"},
        auth={"bootstrapToken": bootstrap},
    )


async def with_device_token(
    client: ProtoClient, key: Ed25519PrivateKey, token: str, *, role: str, scopes: list[str]
) -> dict[str, Any]:
    return await client.connect_signed(
        key, secret=token, role=role, scopes=scopes, auth={"deviceToken": token}
    )


async def setup_code(operator: ProtoClient, handle: GatewayHandle, **params: Any) -> dict[str, Any]:
    params.setdefault("publicUrl", handle.url)
    return await operator.call("device.pair.setupCode", params)


async def test_a_phone_pairs_with_a_setup_code(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(NO_AUTO)
    operator = await admin(handle, make_client)
    result = await setup_code(operator, handle, includeQr=True)
    validator("DevicePairSetupCodeResult").validate(result)
    assert result["qrDataUrl"].startswith("data:image/png;base64,")
    code = decode(result["setupCode"])
    assert code.url == handle.url and code.bootstrap_token
    assert result["access"] == "full" and result["accessDowngraded"] is False
    assert result["expiresAtMs"] - time.time() * 1000 > 9 * 60_000
    assert (await operator.call("device.pair.setupStatus", {"setupId": result["setupId"]})) == {}

    key = Ed25519PrivateKey.generate()
    phone = make_client(handle.url)
    res = await with_code(phone, key, code.bootstrap_token)
    assert res["error"]["code"] == "NOT_PAIRED", res
    assert res["error"]["details"]["reason"] == "not-paired"
    request_id = res["error"]["details"]["requestId"]
    assert (await phone.expect_close())[0] == 1008
    requested = (await operator.next_event("device.pair.requested"))["payload"]
    validator("DevicePairRequestedEvent").validate(requested)
    assert requested["roles"] == ["node", "operator"]
    assert set(requested["scopes"]) == set(OPERATOR_FULL)
    assert (await operator.request("device.pair.approve", {"requestId": request_id}))["ok"]

    res = await with_code(make_client(handle.url), key, code.bootstrap_token)
    assert res["ok"], res
    auth = res["payload"]["auth"]
    validator("HelloOk").validate(res["payload"])
    assert auth["role"] == "node" and auth["scopes"] == [] and auth["deviceToken"]
    tokens = {t["role"]: t for t in auth["deviceTokens"]}
    assert tokens["node"]["deviceToken"] == auth["deviceToken"]
    assert tokens["operator"]["scopes"] == list(OPERATOR_FULL)
    completed = (await operator.next_event("device.pair.setup.completed"))["payload"]
    validator("DevicePairSetupCompletedEvent").validate(completed)
    assert completed["deviceId"] == device_id(key) and completed["deviceName"] == "Test Phone"
    status = await operator.call("device.pair.setupStatus", {"setupId": result["setupId"]})
    assert status["completion"] == completed

    # The handed-over operator token works on its own (no shared secret)...
    op = await with_device_token(
        make_client(handle.url), key, tokens["operator"]["deviceToken"],
        role="operator", scopes=["operator.read"],
    )  # fmt: skip
    assert op["ok"], op
    # ... and the code is spent.
    again = await with_code(make_client(handle.url), key, code.bootstrap_token)
    assert again["error"]["details"]["code"] == "AUTH_BOOTSTRAP_TOKEN_INVALID"
    assert again["error"]["details"]["reason"] == "used"
    # Tokens never reach the log.
    log = handle.gateway.state.log_file.read_text()
    assert code.bootstrap_token not in log and auth["deviceToken"] not in log


async def test_bad_setup_codes_are_refused(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(NO_AUTO)
    operator = await admin(handle, make_client)
    token = decode((await setup_code(operator, handle))["setupCode"]).bootstrap_token

    res = await with_code(make_client(handle.url), Ed25519PrivateKey.generate(), "made-up")
    assert res["error"]["details"]["code"] == "AUTH_BOOTSTRAP_TOKEN_INVALID"
    assert res["error"]["details"]["reason"] == "unknown"
    # Bound to the first device that used it.
    first = await with_code(make_client(handle.url), Ed25519PrivateKey.generate(), token)
    assert first["error"]["code"] == "NOT_PAIRED"
    other = await with_code(make_client(handle.url), Ed25519PrivateKey.generate(), token)
    assert other["error"]["details"]["reason"] == "other-device"
    # Expired after 10 minutes.
    late = decode((await setup_code(operator, handle))["setupCode"]).bootstrap_token
    for entry in handle.gateway.state.bootstrap.entries.values():
        entry["expiresAtMs"] = 0
    res = await with_code(make_client(handle.url), Ed25519PrivateKey.generate(), late)
    assert res["error"]["details"]["reason"] == "expired"
    assert "10 minutes" in res["error"]["message"]
    # A code for a node only cannot become an operator.
    node_only = await setup_code(operator, handle, bootstrapProfile="node")
    res = await with_code(
        make_client(handle.url), Ed25519PrivateKey.generate(),
        decode(node_only["setupCode"]).bootstrap_token, role="operator", scopes=["operator.read"],
    )  # fmt: skip
    assert res["error"]["details"]["code"] == "AUTH_SCOPE_MISMATCH"
    # A bootstrap token without a device identity is no credential.
    bare = make_client(handle.url)
    res = await bare.connect(role="node", scopes=[], auth={"bootstrapToken": token})
    assert res["error"]["details"]["code"] == "DEVICE_IDENTITY_REQUIRED"
    # Unknown profile, bad public URL.
    bad = await operator.request("device.pair.setupCode", {"bootstrapProfile": "root"})
    assert "unknown bootstrapProfile" in bad["error"]["message"]
    bad = await operator.request("device.pair.setupCode", {"publicUrl": "ws://8.8.8.8:1"})
    assert "wss://" in bad["error"]["message"]
    # Setup codes need admin.
    reader = make_client(handle.url)
    await reader.connect(token=handle.token, scopes=["operator.pairing"])
    res = await reader.request("device.pair.setupCode", {})
    assert res["error"]["details"]["missingScope"] == "operator.admin"


async def test_a_loopback_only_gateway_says_how_to_allow_phones(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    operator = await admin(gateway, make_client)
    res = await operator.request("device.pair.setupCode", {})
    assert res["error"]["details"]["code"] == "LAN_DISABLED"
    assert "gateway.bind" in res["error"]["message"]


async def test_plain_ws_on_the_network_downgrades_full_access(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(NO_AUTO)
    operator = await admin(handle, make_client)
    result = await setup_code(operator, handle, publicUrl="ws://192.168.1.20:18789")
    assert result["access"] == "limited" and result["accessDowngraded"] is True
    result = await setup_code(operator, handle, publicUrl="wss://moltis.example.ts.net")
    assert result["access"] == "full" and result["accessDowngraded"] is False


def test_setup_code_text_forms() -> None:
    import base64
    import json

    raw = base64.urlsafe_b64encode(
        json.dumps({"url": "wss://gateway.example.com:443", "token": "abc"}).encode()
    ).decode().rstrip("=")  # fmt: skip
    code = decode(raw)  # OpenClaw's test vector (the early form)
    assert code.url == "wss://gateway.example.com:443" and code.legacy_token == "abc"
    assert decode("oc-pair://" + raw) == code
    for bad in ("", "!!!", base64.urlsafe_b64encode(b'{"x":1}').decode()):
        with pytest.raises(SetupCodeError, match=r"\w"):
            decode(bad)


async def test_device_proof_failures_each_have_their_code(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    key = Ed25519PrivateKey.generate()
    scopes = ["operator.read"]

    async def attempt(**change: Any) -> dict[str, Any]:
        client = make_client(gateway.url)
        res = await client.connect_signed(
            key, secret=gateway.token, device_change=change.pop("device", {}),
            token=gateway.token, scopes=scopes,
        )  # fmt: skip
        if not res["ok"]:
            assert (await client.expect_close())[0] == 1008
        return res

    # A signature captured on one connection is useless on another (its nonce differs).
    first = make_client(gateway.url)
    challenge = (await first.open())["payload"]
    captured = signed_device(key, nonce=challenge["nonce"], ts=challenge["ts"],
                             token=gateway.token, scopes=scopes)  # fmt: skip
    res = await attempt(device=captured)
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_NONCE_MISMATCH"
    # Outside the 10-minute window.
    stale_ts = int(time.time() * 1000) - 11 * 60_000
    client = make_client(gateway.url)
    challenge = (await client.open())["payload"]
    stale = signed_device(key, nonce=challenge["nonce"], ts=stale_ts, token=gateway.token,
                          scopes=scopes)  # fmt: skip
    res = await client.connect(token=gateway.token, scopes=scopes, device=stale)
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_SIGNATURE_EXPIRED"
    # An id that is not the hash of the key.
    res = await attempt(device={"id": device_id(Ed25519PrivateKey.generate())})
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_DEVICE_ID_MISMATCH"
    res = await attempt(device={"publicKey": "not-a-key"})
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_PUBLIC_KEY_INVALID"
    res = await attempt(device={"signature": captured["signature"]})
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_SIGNATURE_INVALID"


def test_the_nonce_is_required_off_loopback() -> None:
    key = Ed25519PrivateKey.generate()
    now = int(time.time() * 1000)
    device = signed_device(key, nonce="n", ts=now, token="", scopes=[])
    proof = SignedConnect(
        device_id=str(device["id"]), public_key=str(device["publicKey"]),
        signature=str(device["signature"]), signed_at=now, nonce="", client_id="cli",
        client_mode="cli", role="operator", scopes=(), token="", platform="linux",
        device_family="linux",
    )  # fmt: skip
    with pytest.raises(DeviceProofError) as refused:
        verify_device_proof(proof, challenge_nonce="n", now_ms=now, loopback=False)
    assert refused.value.code == "DEVICE_AUTH_NONCE_REQUIRED"
    # On loopback a legacy v1 signature (no nonce in it) is accepted; v3 without nonce is not.
    import base64
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ident = hashlib.sha256(raw).hexdigest()
    v1 = f"v1|{ident}|cli|cli|operator||{now}|"
    sig = base64.urlsafe_b64encode(key.sign(v1.encode())).decode().rstrip("=")
    legacy = SignedConnect(**{**proof.__dict__, "signature": sig})
    verify_device_proof(legacy, challenge_nonce="n", now_ms=now, loopback=True)
    with pytest.raises(DeviceProofError) as refused:
        verify_device_proof(legacy, challenge_nonce="n", now_ms=now, loopback=False)
    assert refused.value.code == "DEVICE_AUTH_NONCE_REQUIRED"


async def test_a_scope_upgrade_needs_approval(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(NO_AUTO)
    operator = await admin(handle, make_client)
    key = Ed25519PrivateKey.generate()

    async def with_secret(scopes: list[str]) -> dict[str, Any]:
        client = make_client(handle.url)
        return await client.connect_signed(
            key, secret=handle.token, token=handle.token, scopes=scopes
        )

    rid = (await with_secret(["operator.read"]))["error"]["details"]["requestId"]
    await operator.call("device.pair.approve", {"requestId": rid})
    res = await with_secret(["operator.read"])
    token = res["payload"]["auth"]["deviceToken"]
    # More scopes with the shared secret: a new request, reason scope-upgrade.
    res = await with_secret(["operator.read", "operator.admin"])
    assert res["error"]["code"] == "NOT_PAIRED"
    assert res["error"]["details"]["reason"] == "scope-upgrade"
    # More scopes than its device token carries: refused too, never granted silently.
    res = await with_device_token(make_client(handle.url), key, token, role="operator",
                                  scopes=["operator.admin"])  # fmt: skip
    assert res["error"]["details"]["reason"] == "scope-upgrade"
    # A new role is a role upgrade.
    client = make_client(handle.url)
    res = await client.connect_signed(
        key, secret=handle.token, token=handle.token, scopes=[], role="node"
    )
    assert res["error"]["details"]["reason"] == "role-upgrade"
    # The device token alone still works for what it was approved for.
    res = await with_device_token(make_client(handle.url), key, token, role="operator",
                                  scopes=["operator.read"])  # fmt: skip
    assert res["ok"], res
    # A revoked token is refused with OpenClaw's code, and the socket closes 1008.
    dev = device_id(key)
    await operator.call("device.token.revoke", {"deviceId": dev, "role": "operator"})
    client = make_client(handle.url)
    res = await with_device_token(client, key, token, role="operator", scopes=["operator.read"])
    assert res["error"]["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH"
    assert (await client.expect_close())[0] == 1008


async def test_pairing_requests_are_rate_limited(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(NO_AUTO + "max_pairing_requests_per_minute = 2\n")
    codes = []
    for _ in range(3):
        key = Ed25519PrivateKey.generate()
        client = make_client(handle.url)
        res = await client.connect_signed(
            key, secret=handle.token, token=handle.token, scopes=["operator.read"]
        )
        codes.append(res["error"]["details"]["code"])
    assert codes == ["PAIRING_REQUIRED", "PAIRING_REQUIRED", "PAIRING_RATE_LIMITED"]
    # A device asking again for its existing request is not a new request.
    assert len(handle.gateway.state.pairing.pending) == 2
