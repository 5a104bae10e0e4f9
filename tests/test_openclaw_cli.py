"""The real `openclaw` CLI (npm openclaw, on Node 24) as an outside client of our gateway.

`make install` caches Node and the CLI outside the repo; this drives them exactly as the
protocol reference (section A.2) describes, with an isolated HOME and loopback only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.openclaw import OpenClaw
from tests.support.process import GatewayProcess, gateway_process

TOKEN = "openclaw-cli-token-0123456789"
pytestmark = pytest.mark.openclaw


@pytest.fixture(scope="module")
def moltis_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with gateway_process(tmp_path_factory.mktemp("moltis"), token=TOKEN) as gw:
        yield gw


@pytest.fixture
def openclaw(moltis_gateway: GatewayProcess, tmp_path: Path) -> OpenClaw:
    return OpenClaw(moltis_gateway, tmp_path / "home", TOKEN)


def test_health(openclaw: OpenClaw) -> None:
    rc, health = openclaw.json("health", "--json")
    assert rc == 0
    assert health["ok"] is True
    assert health["defaultAgentId"] == "main"
    plain = openclaw.run("health")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "Agents: main (default)" in plain.stdout
    assert "Heartbeat interval: disabled (main)" in plain.stdout


def test_gateway_call_health_and_config_get(openclaw: OpenClaw) -> None:
    rc, health = openclaw.json("gateway", "call", "health", "--json")
    assert rc == 0
    assert health["ok"] is True
    rc, config = openclaw.json("gateway", "call", "config.get", "--json")
    assert rc == 0
    assert config["valid"] is True
    assert config["config"]["gateway"]["port"] == openclaw.gateway.port
    assert TOKEN not in json.dumps(config)


def test_status(openclaw: OpenClaw) -> None:
    rc, status = openclaw.json("status", "--json")
    assert rc == 0
    gateway = status["gateway"]
    assert gateway["reachable"] is True
    # As with OpenClaw's own gateway: the probe connection has no scopes, the backend one reads.
    assert status["runtimeVersion"] == "0.1.0"
    assert status["sessions"]["count"] == 0
    plain = openclaw.run("status")
    assert plain.returncode == 0
    gateway_row = next(line for line in plain.stdout.splitlines() if "│ Gateway " in line)
    assert re.search(r"· reachable \d+ms · auth token", gateway_row), gateway_row
    assert "unreachable" not in gateway_row


def test_gateway_probe(openclaw: OpenClaw) -> None:
    url = openclaw.gateway.url
    rc, probe = openclaw.json("gateway", "probe", "--json", "--url", url, "--token", TOKEN)
    assert rc == 0
    assert probe["ok"] is True
    target = next(t for t in probe["targets"] if t["url"] == url)
    assert target["connect"]["ok"] is True
    # Probe connections get no scopes (OpenClaw's rule), so this is OpenClaw's own answer.
    assert probe["capability"] == "connected_no_operator_scope"


def test_system_presence(openclaw: OpenClaw) -> None:
    rc, presence = openclaw.json("system", "presence", "--json")
    assert rc == 0
    assert presence[0]["mode"] == "gateway"
    assert presence[0]["reason"] == "self"


def test_channels_status(openclaw: OpenClaw) -> None:
    result = openclaw.run("channels", "status", "--json")
    assert result.returncode == 0
    assert "Gateway not reachable" not in result.stdout + result.stderr
    payload = json.loads(result.stdout[result.stdout.find("{") :])
    assert payload["channels"] == {}


def test_logs(openclaw: OpenClaw) -> None:
    result = openclaw.run("logs", "--limit", "200", "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    messages = [str(r.get("message")) for r in records if r.get("type") == "log"]
    assert any(m.startswith("gateway listening on ws://127.0.0.1:") for m in messages), messages
    plain = openclaw.run("logs", "--limit", "200")
    assert plain.returncode == 0, plain.stderr
    # Rendered from our JSON lines: time, level, subsystem, message.
    assert " info gateway.server gateway listening on ws://" in plain.stdout


def test_models_list_needs_the_published_catalogue_capability(openclaw: OpenClaw) -> None:
    rc, models = openclaw.json("models", "list", "--json")
    assert rc == 0
    assert models["models"] == []


def test_wrong_token_is_refused(moltis_gateway: GatewayProcess, tmp_path: Path) -> None:
    wrong = OpenClaw(moltis_gateway, tmp_path / "wrong", "this-is-not-the-token")
    result = wrong.run("health", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout[result.stdout.find("{") :])["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["details"]["code"] == "AUTH_TOKEN_MISMATCH"
    assert "gateway token mismatch" in error["message"]
    call = wrong.run(
        "gateway", "call", "health", "--url", moltis_gateway.url, "--token", "also-wrong-token"
    )
    assert call.returncode == 1
    assert "unauthorized" in call.stdout + call.stderr
