"""The real `openclaw node run` (npm openclaw, on Node 24) pairs with our gateway through the
approval flow: its pending request shows in `moltis devices list`, `moltis devices approve`
pairs it, it reconnects by itself, the real CLI sees it connected and paired, and our
`node.invoke` reaches its `system.which`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.openclaw import OpenClaw
from tests.support.process import BIN, GatewayProcess, gateway_process, stop_process

TOKEN = "openclaw-node-token-0123456789"
NAME = "oc-node-under-test"
pytestmark = pytest.mark.openclaw
T = TypeVar("T")


def _moltis(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**gw.env, "MOLTIS_URL": gw.url, "MOLTIS_TOKEN": TOKEN}
    return subprocess.run(
        [str(BIN / "moltis"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _moltis_json(gw: GatewayProcess, *args: str) -> Any:
    result = _moltis(gw, *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float, node_log: Path) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    log = node_log.read_text(errors="replace")[-4000:]
    pytest.fail(f"timed out after {timeout} s waiting for {what}; node output:\n{log}")


@pytest.mark.timeout(300)
def test_node_run_pairs_through_approval_and_answers_invoke(tmp_path: Path) -> None:
    with gateway_process(
        tmp_path / "moltis", token=TOKEN, MOLTIS_GATEWAY__AUTO_APPROVE_LOOPBACK_DEVICES="false"
    ) as gw:
        openclaw = OpenClaw(gw, tmp_path / "home", TOKEN)
        node_log = tmp_path / "node.out"
        with node_log.open("w") as out:
            node = subprocess.Popen(
                [str(openclaw.node), str(openclaw.entry), "node", "run", "--host", "127.0.0.1",
                 "--port", str(gw.port), "--no-tls", "--display-name", NAME],
                env=openclaw.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )  # fmt: skip
        try:
            _pair_and_check(gw, openclaw, node, node_log)
        finally:
            stop_process(node)


def _pair_and_check(
    gw: GatewayProcess, openclaw: OpenClaw, node: subprocess.Popen[str], node_log: Path
) -> None:
    # Loopback is not approved silently here: the node's device waits for an operator.
    def pending() -> dict[str, Any] | None:
        assert node.poll() is None, node_log.read_text(errors="replace")
        listing = _moltis_json(gw, "devices", "list")
        return next((r for r in listing["pending"] if r.get("role") == "node"), None)

    request = _wait_for("the node's pairing request", pending, 120, node_log)
    assert request["displayName"] == NAME
    assert request["roles"] == ["node"]
    assert _moltis_json(gw, "devices", "list")["paired"] == []

    approved = _moltis(gw, "devices", "approve", request["requestId"])
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"{request['requestId']}: paired" in approved.stdout

    # The node reconnects by itself (its backoff) and shows connected to the real CLI.
    def connected() -> dict[str, Any] | None:
        assert node.poll() is None, node_log.read_text(errors="replace")
        rc, status = openclaw.json("nodes", "status", "--json")
        assert rc == 0, status
        return next((n for n in status["nodes"] if n.get("connected")), None)

    entry = _wait_for("the node to reconnect", connected, 150, node_log)
    device_id = request["deviceId"]
    assert entry["nodeId"] == device_id
    assert entry["displayName"] == NAME
    assert entry["paired"] is True
    assert entry["platform"] == "linux"
    assert "system.which" in entry["commands"]

    rc, nodes = openclaw.json("nodes", "list", "--json")
    assert rc == 0, nodes
    listed = json.dumps(nodes)
    assert device_id in listed, nodes

    rc, devices = openclaw.json("devices", "list", "--json")
    assert rc == 0, devices
    paired = next(d for d in devices["paired"] if d["deviceId"] == device_id)
    assert "node" in paired["roles"]
    assert not any(r.get("deviceId") == device_id for r in devices["pending"])

    # Our node.invoke (admin, through `moltis call`) reaches the node host's system.which.
    params = {
        "nodeId": device_id,
        "command": "system.which",
        "params": {"bins": ["sh"]},
        "idempotencyKey": "which-sh-1",
        "timeoutMs": 30_000,
    }
    call = _moltis(gw, "call", "node.invoke", "--params", json.dumps(params))
    assert call.returncode == 0, call.stdout + call.stderr
    result = json.loads(call.stdout)
    assert result["ok"] is True, result
    payload = result.get("payload")
    if payload is None and result.get("payloadJSON"):
        payload = json.loads(result["payloadJSON"])
    assert payload["bins"]["sh"].endswith("/sh"), result
