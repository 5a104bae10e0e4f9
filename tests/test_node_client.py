"""The node host (`moltis node run`): its device identity, its commands, and its client
against a real gateway process and against a scripted gateway on a loopback port (for what
the gateway under test cannot be made to do on cue: pairing pending, revoked tokens, going
quiet, TLS pinning, invoking commands)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from moltis_desktop.cli import main as cli_main
from moltis_desktop.node.backoff import Backoff
from moltis_desktop.node.client import NodeClient
from moltis_desktop.node.commands import CommandError, NodeCommands
from moltis_desktop.node.errors import (
    NodeAuthError,
    NodeConfigError,
    NodePairingPending,
    NodeTlsError,
    NodeUnreachableError,
)
from moltis_desktop.node.identity import (
    DeviceIdentity,
    NodeStateError,
    NodeTokens,
    RoleToken,
    connect_signature_payload,
)
from moltis_desktop.pairing.identity import SignedConnect, verify_device_proof
from moltis_desktop.pairing.setupcode import SetupCode, decode, encode
from tests.support.process import BIN, base_env, free_port, gateway_process

STEP_S = 10.0
"""Seconds any single wait may take."""


def _fast() -> Backoff:
    return Backoff(start_s=0.01, cap_s=0.05)


# ---------------------------------------------------------------- identity


def test_identity_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "node" / "identity.json"
    identity = DeviceIdentity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["deviceId"] == identity.device_id
    assert data["publicKeyPem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert data["createdAtMs"] > 0
    assert identity.device_id == hashlib.sha256(identity.public_key_raw).hexdigest()
    assert len(identity.public_key_raw) == 32
    again = DeviceIdentity.load_or_create(path)
    assert again.device_id == identity.device_id
    assert again.public_key == identity.public_key
    assert "=" not in identity.public_key
    path.write_text('{"privateKeyPem": "nope"}')
    with pytest.raises(NodeStateError, match="delete it"):
        DeviceIdentity.load_or_create(path)


def test_signed_connect_verifies_with_the_gateway_check(tmp_path: Path) -> None:
    identity = DeviceIdentity.load_or_create(tmp_path / "identity.json")
    now = int(time.time() * 1000)
    device = identity.sign_connect(
        nonce="n-1",
        signed_at_ms=now,
        client_id="node-host",
        client_mode="node",
        role="node",
        scopes=[],
        token="boot-token-1",
        platform="linux",
        device_family="Linux",
    )
    assert device == {
        "id": identity.device_id,
        "publicKey": identity.public_key,
        "signature": device["signature"],
        "signedAt": now,
        "nonce": "n-1",
    }
    proof = SignedConnect(
        device_id=device["id"],
        public_key=device["publicKey"],
        signature=device["signature"],
        signed_at=now,
        nonce="n-1",
        client_id="node-host",
        client_mode="node",
        role="node",
        scopes=(),
        token="boot-token-1",
        platform="linux",
        device_family="Linux",
    )
    verify_device_proof(proof, challenge_nonce="n-1", now_ms=now)
    payload = connect_signature_payload(
        device_id=identity.device_id, client_id="node-host", client_mode="node", role="node",
        scopes=["a", "b"], signed_at_ms=5, token="t", nonce="n", platform=" MacOS ",
        device_family="Mac",
    )  # fmt: skip
    assert payload == f"v3|{identity.device_id}|node-host|node|node|a,b|5|t|n|macos|mac"


def test_setup_codes_are_read_as_codes_and_links(tmp_path: Path) -> None:
    pin = "ab" * 32
    code = encode(
        SetupCode(
            url="wss://192.168.1.5:18789",
            urls=("wss://192.168.1.5:18789", "wss://10.0.0.7:18789"),
            bootstrap_token="boot-abc",
            tls_sha256=pin,
        )
    )
    parsed = decode(f"oc-pair://{code}")
    assert parsed == decode(code)
    client = NodeClient(tmp_path / "state", setup_code=f"oc-pair://{code}")
    assert client.urls == ["wss://192.168.1.5:18789", "wss://10.0.0.7:18789"]
    assert client.bootstrap_token == "boot-abc"
    assert client.tls_sha256 == pin
    with pytest.raises(NodeConfigError, match="not a setup code"):
        NodeClient(tmp_path / "state", setup_code="oc-pair://%%%")
    with pytest.raises(NodeConfigError, match="only wss://"):
        NodeClient(tmp_path / "state", url="ws://8.8.8.8:18789", token="x")


# ---------------------------------------------------------------- commands


async def test_system_which_and_notify() -> None:
    commands = NodeCommands()
    found = await commands.invoke("system.which", {"bins": ["sh", "no-such-program-xyz"]})
    assert found == {"bins": {"sh": shutil.which("sh")}}
    assert Path(found["bins"]["sh"]).is_absolute()
    notified = await commands.invoke("system.notify", {"title": "hello"})
    assert notified["ok"] is True
    if shutil.which("notify-send") is None:
        assert notified["delivered"] is False
    with pytest.raises(CommandError) as unknown:
        await commands.invoke("camera.snap", {})
    assert unknown.value.code == "UNKNOWN_COMMAND"
    with pytest.raises(CommandError) as bad:
        await commands.invoke("system.which", {"bins": "sh"})
    assert bad.value.code == "INVALID_REQUEST"


async def test_system_run_is_off_unless_allowed() -> None:
    off = NodeCommands()
    assert "system.run" not in off.names()
    assert off.names() == ["system.notify", "system.which"]
    with pytest.raises(CommandError) as disabled:
        await off.invoke("system.run", {"command": ["echo", "hi"]})
    assert disabled.value.code == "COMMAND_DISABLED"
    assert "--allow-run" in disabled.value.message

    on = NodeCommands(allow_run=True)
    assert "system.run" in on.names()
    async with asyncio.timeout(STEP_S):
        ran = await on.invoke("system.run", {"command": ["echo", "hi"]})
        env = await on.invoke(
            "system.run",
            {"command": ["sh", "-c", 'echo "$GREETING" >&2; exit 3'], "env": {"GREETING": "yo"}},
        )
        big = await on.invoke("system.run", {"command": ["head", "-c", "300000", "/dev/zero"]})
    assert ran == {"exitCode": 0, "stdout": "hi\n", "stderr": "", "timedOut": False,
                   "truncated": False}  # fmt: skip
    assert (env["exitCode"], env["stderr"]) == (3, "yo\n")
    assert big["truncated"] is True
    assert len(big["stdout"]) == 200 * 1024
    with pytest.raises(CommandError) as missing:
        await on.invoke("system.run", {"command": ["no-such-program-xyz"]})
    assert missing.value.code == "EXEC_FAILED"


async def test_system_run_timeout_kills_the_program() -> None:
    commands = NodeCommands(allow_run=True)
    started = time.monotonic()
    async with asyncio.timeout(STEP_S):
        result = await commands.invoke(
            "system.run", {"command": ["sh", "-c", "echo before; sleep 30"], "timeoutMs": 300}
        )
    assert time.monotonic() - started < 5
    assert result["timedOut"] is True
    assert result["stdout"] == "before\n"
    assert result["exitCode"] != 0


# ---------------------------------------------------------------- a real gateway


async def test_node_pairs_with_the_shared_token_then_uses_its_own(tmp_path: Path) -> None:
    state = tmp_path / "node"
    with gateway_process(tmp_path / "gw") as gw:
        assert gw.token is not None
        first = NodeClient(state, url=gw.url, token=gw.token, display_name="test node")
        try:
            async with asyncio.timeout(STEP_S):
                hello = await first.connect_once()
            assert first.connected.is_set()
            assert hello["type"] == "hello-ok"
            assert hello["auth"]["role"] == "node"
            assert len(hello["auth"]["deviceToken"]) >= 32
        finally:
            await first.close()
        assert not first.connected.is_set()
        tokens_file = state / "tokens.json"
        assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((state / "identity.json").stat().st_mode) == 0o600
        stored = json.loads(tokens_file.read_text())
        assert stored["gatewayUrl"] == gw.url
        assert stored["tokens"]["node"]["token"] == hello["auth"]["deviceToken"]
        assert stored["tokens"]["node"]["scopes"] == []

        # Later: only the state directory, so only the node's own token.
        again = NodeClient(state)
        assert again.node_id == first.node_id
        assert again._credential(gw.url) == ("deviceToken", hello["auth"]["deviceToken"])
        try:
            async with asyncio.timeout(STEP_S):
                hello2 = await again.connect_once()
        finally:
            await again.close()
        assert hello2["auth"]["role"] == "node"
        assert "deviceToken" not in hello2["auth"]
        log = gw.output()
        assert f"device {first.node_id[:12]}: device token accepted for role node" in log
        assert hello["auth"]["deviceToken"] not in log


def _moltis(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "moltis"), *args], env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def test_moltis_node_run_cli(tmp_path: Path) -> None:
    state = tmp_path / "node-state"
    env = base_env(tmp_path / "node-home")
    with gateway_process(tmp_path / "gw") as gw:
        assert gw.token is not None
        once = _moltis(env, "node", "run", "--url", gw.url, "--token", gw.token, "--once",
                       "--state-dir", str(state), "--name", "cli node")  # fmt: skip
        assert once.returncode == 0, once.stderr
        assert f"connected to {gw.url} as node" in once.stdout
        token = json.loads((state / "tokens.json").read_text())["tokens"]["node"]["token"]
        assert token not in once.stdout + once.stderr

        status = _moltis(env, "node", "status", "--state-dir", str(state))
        assert status.returncode == 0, status.stderr
        assert f"Gateway:  {gw.url}" in status.stdout
        assert "Token:    node" in status.stdout
        assert token not in status.stdout and gw.token not in status.stdout

        # Runs until Ctrl-C, reconnecting with the stored token alone.
        proc = subprocess.Popen(
            [str(BIN / "moltis"), "node", "run", "--state-dir", str(state)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            lines = []
            deadline = time.monotonic() + STEP_S
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                lines.append(line)
                if line.startswith("connected to"):
                    break
            assert any(x.startswith("connected to") for x in lines), lines
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=STEP_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert "node stopped" in out
        assert "Traceback" not in err

        wrong = _moltis(env, "node", "run", "--url", gw.url, "--token", "not-the-token-123",
                        "--once", "--state-dir", str(tmp_path / "other"))  # fmt: skip
        assert wrong.returncode == 1
        assert "moltis: the gateway refused the token" in wrong.stderr
        assert "moltis node run --pair" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    bad_code = _moltis(env, "node", "run", "--pair", "oc-pair://nope!", "--state-dir", str(state))
    assert bad_code.returncode == 1
    assert "not a setup code" in bad_code.stderr


# ---------------------------------------------------------------- a scripted gateway


Script = Callable[["FakeGateway", web.WebSocketResponse, dict[str, Any], int], Awaitable[None]]


class FakeGateway:
    """Plays a gateway on a loopback port: sends the challenge, checks the signed connect the
    way the real one does, then lets the test's script answer."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connects: list[dict[str, Any]] = []
        self.close_codes: list[int | None] = []
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_context).start()
        self.url = f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        nonce, ts = str(uuid.uuid4()), int(time.time() * 1000)
        await ws.send_json(
            {"type": "event", "event": "connect.challenge", "payload": {"nonce": nonce, "ts": ts}}
        )
        frame = json.loads((await ws.receive(timeout=STEP_S)).data)
        params = frame["params"]
        auth = params["auth"]
        device = params["device"]
        verify_device_proof(
            SignedConnect(
                device_id=device["id"], public_key=device["publicKey"],
                signature=device["signature"], signed_at=device["signedAt"],
                nonce=device["nonce"], client_id=params["client"]["id"],
                client_mode=params["client"]["mode"], role=params["role"],
                scopes=tuple(params["scopes"]),
                token=auth.get("token") or auth.get("deviceToken") or auth.get("bootstrapToken"),
                platform=params["client"]["platform"],
                device_family=params["client"]["deviceFamily"],
            ),
            challenge_nonce=nonce,
            now_ms=int(time.time() * 1000),
        )  # fmt: skip
        self.connects.append(frame)
        await self.script(self, ws, frame, len(self.connects) - 1)
        if not ws.closed:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.received.put(json.loads(msg.data))
        self.close_codes.append(ws.close_code)
        return ws


def hello_ok(
    frame: dict[str, Any], auth: dict[str, Any] | None = None, tick_ms: int = 30_000
) -> dict[str, Any]:
    snapshot = {"presence": [], "health": {}, "stateVersion": {"presence": 0, "health": 0},
                "uptimeMs": 1}  # fmt: skip
    policy = {"maxPayload": 524288, "maxBufferedBytes": 1572864, "tickIntervalMs": tick_ms}
    return {
        "type": "res",
        "id": frame["id"],
        "ok": True,
        "payload": {
            "type": "hello-ok",
            "protocol": 4,
            "server": {"version": "fake", "connId": str(uuid.uuid4())},
            "features": {"methods": [], "events": []},
            "snapshot": snapshot,
            "auth": auth or {"role": "node", "scopes": []},
            "policy": policy,
        },
    }


def refused(frame: dict[str, Any], top: str, message: str, /, **details: Any) -> dict[str, Any]:
    error = {"code": top, "message": message, "details": details}
    return {"type": "res", "id": frame["id"], "ok": False, "error": error}


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[[Script], Awaitable[FakeGateway]]]:
    started: list[FakeGateway] = []

    async def make(script: Script) -> FakeGateway:
        fake = FakeGateway(script)
        started.append(fake)
        await fake.start()
        return fake

    yield make
    for fake in started:
        await fake.close()


MakeFake = Callable[[Script], Awaitable[FakeGateway]]


async def test_node_answers_node_invoke_requests(tmp_path: Path, fakes: MakeFake) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        await ws.send_json(hello_ok(frame))
        for i, (command, params) in enumerate(
            [
                ("system.which", {"bins": ["sh"]}),
                ("system.run", {"command": ["echo", "hi"]}),
                ("camera.snap", None),
            ]
        ):
            payload: dict[str, Any] = {"id": f"inv-{i}", "nodeId": "the-node", "command": command,
                                       "timeoutMs": 5000, "idempotencyKey": f"k{i}"}  # fmt: skip
            if params is not None:
                payload["paramsJSON"] = json.dumps(params)
            await ws.send_json(
                {"type": "event", "event": "node.invoke.request", "payload": payload}
            )
        await ws.send_json({"type": "event", "event": "voicewake.changed",
                            "payload": {"triggers": ["hey moltis"]}})  # fmt: skip
        answered = 0
        async for msg in ws:
            request = json.loads(msg.data)
            await fake.received.put(request)
            await ws.send_json({"type": "res", "id": request["id"], "ok": True, "payload": {}})
            answered += 1
            if answered == 3:
                break

    fake = await fakes(script)
    client = NodeClient(tmp_path / "node", url=fake.url, token="shared-token-1", backoff=_fast())
    runner = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(STEP_S):
            results = {}
            for _ in range(3):
                request = await fake.received.get()
                assert request["type"] == "req"
                assert request["method"] == "node.invoke.result"
                results[request["params"]["id"]] = request["params"]
    finally:
        client.stop()
        async with asyncio.timeout(STEP_S):
            await runner
    params = fake.connects[0]["params"]
    assert params["client"]["id"] == "node-host" and params["client"]["mode"] == "node"
    assert params["role"] == "node" and params["scopes"] == []
    assert params["caps"] == ["system"]
    assert params["commands"] == ["system.notify", "system.which"]
    assert params["auth"] == {"token": "shared-token-1"}
    assert (params["minProtocol"], params["maxProtocol"]) == (3, 4)
    which = results["inv-0"]
    assert which["ok"] is True and which["nodeId"] == "the-node"
    assert json.loads(which["payloadJSON"]) == {"bins": {"sh": shutil.which("sh")}}
    assert results["inv-1"]["ok"] is False
    assert results["inv-1"]["error"]["code"] == "COMMAND_DISABLED"
    assert results["inv-2"]["error"]["code"] == "UNKNOWN_COMMAND"
    assert client.voicewake_triggers == ["hey moltis"]


async def test_setup_code_pairing_waits_for_approval(
    tmp_path: Path, fakes: MakeFake, capsys: pytest.CaptureFixture[str]
) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        if n < 3:
            await ws.send_json(refused(frame, "NOT_PAIRED", "pairing required",
                                       code="PAIRING_REQUIRED", requestId="req-42"))  # fmt: skip
            await ws.close(code=1008, message=b"pairing required")
            return
        await ws.send_json(
            hello_ok(
                frame,
                {"role": "node", "scopes": [], "deviceToken": "node-token-abcdef",
                 "issuedAtMs": 1234,
                 "deviceTokens": [
                     {"deviceToken": "node-token-abcdef", "role": "node", "scopes": [],
                      "issuedAtMs": 1234},
                     {"deviceToken": "operator-token-abcdef", "role": "operator",
                      "scopes": ["operator.read", "operator.write"], "issuedAtMs": 1234}]},
            )
        )  # fmt: skip

    fake = await fakes(script)
    code = encode(SetupCode(url=fake.url, bootstrap_token="boot-token-xyz"))
    said: list[str] = []
    client = NodeClient(tmp_path / "node", setup_code=f"oc-pair://{code}", say=said.append,
                        backoff=_fast())  # fmt: skip
    async with asyncio.timeout(STEP_S):
        hello = await client.run(once=True)
    assert hello is not None and hello["auth"]["deviceToken"] == "node-token-abcdef"
    assert [f["params"]["auth"] for f in fake.connects] == [
        {"bootstrapToken": "boot-token-xyz"}
    ] * 4
    waiting = [line for line in said if "waiting for approval" in line]
    assert waiting == [
        "waiting for approval: run `moltis devices approve req-42` on the gateway's machine "
        "(or use the tray / web app)"
    ]
    tokens = NodeTokens(tmp_path / "node" / "tokens.json")
    assert tokens.gateway_url == fake.url
    assert tokens.tokens == {
        "node": RoleToken("node-token-abcdef", (), 1234),
        "operator": RoleToken("operator-token-abcdef", ("operator.read", "operator.write"), 1234),
    }
    # `moltis node status` shows the roles, never the tokens.
    assert cli_main(["node", "status", "--state-dir", str(tmp_path / "node")]) == 0
    out = capsys.readouterr().out
    assert "Token:    node (no scopes" in out
    assert "Token:    operator (operator.read, operator.write" in out
    assert "token-abcdef" not in out
    assert cli_main(["node", "status", "--json", "--state-dir", str(tmp_path / "node")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodeId"] == client.node_id and set(data["roles"]) == {"node", "operator"}


def _with_token(state: Path, url: str, token: str) -> None:
    tokens = NodeTokens(state / "tokens.json")
    tokens.set_gateway(url, [url], "")
    tokens.put("node", RoleToken(token, (), 1))


async def test_a_dead_device_token_stops_the_node(tmp_path: Path, fakes: MakeFake) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        await ws.send_json(refused(frame, "INVALID_REQUEST", "unauthorized: device token mismatch",
                                   code="AUTH_DEVICE_TOKEN_MISMATCH"))  # fmt: skip
        await ws.close(code=1008, message=b"unauthorized")

    fake = await fakes(script)
    state = tmp_path / "node"
    _with_token(state, fake.url, "revoked-token-1")
    client = NodeClient(state, backoff=_fast())
    with pytest.raises(NodeAuthError, match=r"moltis node run --pair <new setup code>") as err:
        async with asyncio.timeout(STEP_S):
            await client.run()
    assert err.value.code == "AUTH_DEVICE_TOKEN_MISMATCH"
    assert len(fake.connects) == 1
    assert fake.connects[0]["params"]["auth"] == {"deviceToken": "revoked-token-1"}
    assert "node" not in json.loads((state / "tokens.json").read_text())["tokens"]


async def test_a_dead_device_token_falls_back_to_the_shared_token(
    tmp_path: Path, fakes: MakeFake
) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        if "deviceToken" in frame["params"]["auth"]:
            await ws.send_json(refused(frame, "INVALID_REQUEST", "unauthorized",
                                       code="AUTH_DEVICE_TOKEN_MISMATCH"))  # fmt: skip
            await ws.close(code=1008)
            return
        await ws.send_json(hello_ok(frame, {"role": "node", "scopes": [],
                                            "deviceToken": "fresh-token-1"}))  # fmt: skip

    fake = await fakes(script)
    state = tmp_path / "node"
    _with_token(state, fake.url, "revoked-token-1")
    client = NodeClient(state, url=fake.url, token="shared-token-1")
    try:
        async with asyncio.timeout(STEP_S):
            await client.connect_once()
    finally:
        await client.close()
    assert [f["params"]["auth"] for f in fake.connects] == [
        {"deviceToken": "revoked-token-1"},
        {"token": "shared-token-1"},
    ]
    assert NodeTokens(state / "tokens.json").token_for("node") == "fresh-token-1"


async def test_removed_node_stops_and_a_wrong_token_is_not_retried(
    tmp_path: Path, fakes: MakeFake
) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        if frame["params"]["auth"].get("token") == "wrong":
            await ws.send_json(refused(frame, "INVALID_REQUEST", "unauthorized: gateway token "
                                       "mismatch", code="AUTH_TOKEN_MISMATCH"))  # fmt: skip
            await ws.close(code=1008)
            return
        await ws.send_json(hello_ok(frame))
        await asyncio.sleep(0.05)
        await ws.close(code=1008, message=b"device removed")

    fake = await fakes(script)
    state = tmp_path / "node"
    _with_token(state, fake.url, "soon-gone-token")
    client = NodeClient(state, backoff=_fast())
    with pytest.raises(NodeAuthError, match="device removed") as removed:
        async with asyncio.timeout(STEP_S):
            await client.run()
    assert removed.value.code == "DEVICE_REMOVED"
    assert NodeTokens(state / "tokens.json").token_for("node") is None

    wrong = NodeClient(tmp_path / "other", url=fake.url, token="wrong", backoff=_fast())
    with pytest.raises(NodeAuthError, match="gateway's token"):
        async with asyncio.timeout(STEP_S):
            await wrong.run()
    assert len(fake.connects) == 2


async def test_a_quiet_gateway_is_left_with_4000_and_reconnected(
    tmp_path: Path, fakes: MakeFake
) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        await ws.send_json(hello_ok(frame, tick_ms=100 if n == 0 else 30_000))
        if n == 1:
            second.set()

    second = asyncio.Event()
    fake = await fakes(script)
    client = NodeClient(tmp_path / "node", url=fake.url, token="shared-token-1", backoff=_fast())
    runner = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(STEP_S):
            await second.wait()
    finally:
        client.stop()
        async with asyncio.timeout(STEP_S):
            await runner
    assert fake.close_codes[0] == 4000


async def test_the_next_address_is_tried_and_unreachable_once_fails(
    tmp_path: Path, fakes: MakeFake
) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        await ws.send_json(hello_ok(frame))

    fake = await fakes(script)
    dead = f"ws://127.0.0.1:{free_port()}"
    code = encode(SetupCode(url=dead, urls=(dead, fake.url), bootstrap_token="boot-1"))
    client = NodeClient(tmp_path / "node", setup_code=code)
    try:
        async with asyncio.timeout(STEP_S):
            await client.connect_once()
        assert client.url == fake.url
        assert client.urls[0] == fake.url
    finally:
        await client.close()
    nowhere = NodeClient(tmp_path / "n2", url=dead, token="t-123456")
    with pytest.raises(NodeUnreachableError, match="cannot reach the gateway"):
        async with asyncio.timeout(STEP_S):
            await nowhere.run(once=True)


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moltis-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    pin = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return context, pin


@pytest.mark.skipif(sys.platform == "win32", reason="loopback TLS server setup")
async def test_tls_certificate_is_pinned(tmp_path: Path) -> None:
    async def script(fake: FakeGateway, ws: web.WebSocketResponse, frame: dict[str, Any],
                     n: int) -> None:  # fmt: skip
        await ws.send_json(hello_ok(frame))

    context, pin = _self_signed(tmp_path)
    fake = FakeGateway(script)
    url = await fake.start(context)
    try:
        code = encode(SetupCode(url=url, bootstrap_token="b-1", tls_sha256=pin))
        good = NodeClient(tmp_path / "a", setup_code=code)
        try:
            async with asyncio.timeout(STEP_S):
                await good.connect_once()
        finally:
            await good.close()
        assert NodeTokens(tmp_path / "a" / "tokens.json").tls_sha256 == pin
        other_pin = hashlib.sha256(b"another certificate").hexdigest()
        bad = NodeClient(
            tmp_path / "b",
            setup_code=encode(SetupCode(url=url, bootstrap_token="b-1", tls_sha256=other_pin)),
        )
        with pytest.raises(NodeTlsError, match="different TLS certificate"):
            async with asyncio.timeout(STEP_S):
                await bad.run()
        assert len(fake.connects) == 1
    finally:
        await fake.close()


def test_pairing_pending_says_what_to_do() -> None:
    pending = NodePairingPending("req-7")
    assert pending.request_id == "req-7"
    assert "moltis devices approve req-7" in str(pending)
