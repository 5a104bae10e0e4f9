"""The whole phone flow across processes, as a person does it.

A gateway process makes a setup code; the tray dialog's QR renderer draws it to a PNG; a
real QR decoder reads it back; a node process (`moltis node run --pair`) connects with the
bootstrap token and waits; the owner approves with `moltis devices approve`; hello-ok hands
the node its device token; a fresh node process reconnects with that token alone;
`node.invoke` of `system.which` gets its answer; the token is revoked, the running node is
cut off, and the next connect with the old token is refused with OpenClaw's code and 1008.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the tray's QR renderer, no display

import aiohttp
import pytest
import zxingcpp
from PIL import Image

from moltis_desktop.node.identity import DeviceIdentity
from moltis_desktop.pairing.setupcode import decode
from tests.support.process import BIN, GatewayProcess, gateway_process, stop_process

pytestmark = pytest.mark.timeout(180)


def moltis(gw: GatewayProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "moltis"), *args],
        env={**gw.env, "MOLTIS_URL": gw.url},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def moltis_json(gw: GatewayProcess, *args: str) -> Any:
    done = moltis(gw, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def start_node(gw: GatewayProcess, state: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    out = log.open("a")
    try:
        return subprocess.Popen(
            [str(BIN / "moltis"), "node", "run", "--state-dir", str(state), "--name", "Ada's Pixel",
             *args],
            env={k: v for k, v in gw.env.items() if k not in ("MOLTIS_TOKEN", "MOLTIS_URL")},
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    finally:
        out.close()


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def render_qr(code: str, png: Path) -> None:
    """Draw the code with the tray dialog's own renderer (Qt offscreen) and save a PNG."""
    from PySide6.QtGui import QGuiApplication

    from moltis_desktop.desktop.qr import qr_image

    app = QGuiApplication.instance()
    assert app is not None
    assert qr_image(code).save(str(png), "PNG")


async def connect_with_token(url: str, ident: DeviceIdentity, token: str) -> tuple[Any, Any]:
    """A node's connect with its device token alone; returns (res frame, close code)."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        challenge = json.loads((await ws.receive()).data)["payload"]
        device = ident.sign_connect(
            nonce=challenge["nonce"], signed_at_ms=challenge["ts"], client_id="node-host",
            client_mode="node", role="node", scopes=[], token=token, platform="linux",
            device_family="Linux",
        )  # fmt: skip
        await ws.send_json(
            {"type": "req", "id": "1", "method": "connect", "params": {
                "minProtocol": 3, "maxProtocol": 4,
                "client": {"id": "node-host", "version": "1", "platform": "linux",
                           "deviceFamily": "Linux", "mode": "node"},
                "role": "node", "scopes": [], "auth": {"deviceToken": token}, "device": device}}
        )  # fmt: skip
        res = json.loads((await ws.receive()).data)
        msg = await ws.receive()
        code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else ws.close_code
        return res, code


async def test_pair_a_phone_end_to_end(tmp_path: Path, qapp: Any) -> None:
    del qapp  # a QGuiApplication for the QR renderer
    home = tmp_path / "gateway"
    (home / "config").mkdir(parents=True)
    (home / "config" / "moltis.toml").write_text(
        "[gateway]\nauto_approve_loopback_devices = false\n"
    )
    state = tmp_path / "phone"
    log = tmp_path / "node.log"
    with gateway_process(home, token="phone-flow-token-1") as gw:
        # 1. The code, as the tray dialog shows it, scanned by a real QR decoder.
        setup = moltis_json(
            gw, "call", "device.pair.setupCode", "--params", json.dumps({"publicUrl": gw.url})
        )
        png = tmp_path / "pair-qr.png"
        render_qr(setup["setupCode"], png)
        (scanned,) = zxingcpp.read_barcodes(Image.open(png))
        assert scanned.text == setup["setupCode"]
        code = decode(scanned.text)
        assert code.url == gw.url and code.bootstrap_token

        # 2. The phone (a node process) connects with the bootstrap token and waits.
        node = start_node(gw, state, log, "--pair", scanned.text)
        try:

            def pending() -> Any:
                listed = moltis_json(gw, "devices", "list", "--json")
                return listed["pending"]

            (request,) = wait_for("the pairing request", pending)
            assert request["role"] == "node" and request["displayName"] == "Ada's Pixel"
            assert "waiting for approval" in log.read_text()

            # 3. Approved with the CLI: hello-ok hands over the device token.
            done = moltis(gw, "devices", "approve", request["requestId"])
            assert done.returncode == 0, done.stderr
            wait_for("the node to connect", lambda: "connected" in log.read_text().split(
                "waiting for approval")[-1])  # fmt: skip
            tokens = json.loads((state / "tokens.json").read_text())
            assert set(tokens["tokens"]) == {"node", "operator"}
            assert (state / "tokens.json").stat().st_mode & 0o777 == 0o600
        finally:
            stop_process(node)

        # 4. A new node process reconnects with the stored token alone (no code, no secret).
        log.write_text("")
        node = start_node(gw, state, log)
        try:
            wait_for("the reconnect", lambda: "connected" in log.read_text())
            node_id = DeviceIdentity.load_or_create(state / "identity.json").device_id
            nodes = moltis_json(gw, "call", "node.list")["nodes"]
            (entry,) = [n for n in nodes if n["nodeId"] == node_id]
            assert entry["connected"] and "system.which" in entry["commands"]

            # 5. The agent's side reaches it.
            result = moltis_json(
                gw, "call", "node.invoke", "--params",
                json.dumps({"nodeId": node_id, "command": "system.which",
                            "params": {"bins": ["sh"]}, "idempotencyKey": "which-1"}),
            )  # fmt: skip
            assert result["ok"] is True and result["payload"]["bins"]["sh"].endswith("/sh")

            # 6. Revoked: the running node is cut off and says to pair again.
            done = moltis(gw, "devices", "revoke", node_id, "--role", "node")
            assert done.returncode == 0, done.stderr
            assert node.wait(30) != 0
            assert "pair" in log.read_text().split("connected")[-1].lower()
        finally:
            stop_process(node)

        # 7. The next connect with the old token: OpenClaw's code, and close 1008.
        ident = DeviceIdentity.load_or_create(state / "identity.json")
        res, close = await connect_with_token(gw.url, ident, tokens["tokens"]["node"]["token"])
        assert res["ok"] is False
        assert res["error"]["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH"
        assert close == 1008


def test_a_pinned_phone_trusts_only_the_certificate_in_its_code(tmp_path: Path) -> None:
    from moltis_desktop.pairing.setupcode import SetupCode, encode

    home = tmp_path / "gateway"
    with gateway_process(home, token="tls-flow-token-1", MOLTIS_GATEWAY__TLS__ENABLED="1") as gw:
        assert gw.url.startswith("wss://")
        setup = moltis_json(
            gw, "call", "device.pair.setupCode", "--params", json.dumps({"publicUrl": gw.url})
        )
        code = decode(setup["setupCode"])
        cert = (home / "state" / "tls" / "cert.pem").read_bytes()
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        der = x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
        import hashlib

        assert code.tls_sha256 == hashlib.sha256(der).hexdigest()
        # Pinned to the right certificate: connects (loopback pairs silently here).
        good = subprocess.run(
            [str(BIN / "moltis"), "node", "run", "--once", "--state-dir", str(tmp_path / "a"),
             "--pair", setup["setupCode"]],
            env=gw.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert good.returncode == 0, good.stderr
        assert "connected to wss://" in good.stdout + good.stderr
        # The same code with another fingerprint (someone in the middle): refused.
        forged = encode(SetupCode(url=code.url, bootstrap_token=code.bootstrap_token,
                                  tls_sha256="00" * 32))  # fmt: skip
        bad = subprocess.run(
            [str(BIN / "moltis"), "node", "run", "--once", "--state-dir", str(tmp_path / "b"),
             "--pair", forged],
            env=gw.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert bad.returncode == 1
        assert "certificate" in bad.stderr.lower()
