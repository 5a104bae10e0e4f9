"""The read methods: health, status, lists, logs.tail; every result checked against the schema."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from moltis_desktop.gateway.methods.logs import read_log_slice
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.schema import FrameValidator
from tests.support.wsclient import ProtoClient


async def test_health(operator: ProtoClient, frame_validator: FrameValidator) -> None:
    health = await operator.call("health")
    assert health["ok"] is True
    assert health["defaultAgentId"] == "main"
    assert health["agents"][0]["agentId"] == "main"
    assert health["agents"][0]["isDefault"] is True
    assert health["sessions"]["count"] == 0
    assert health["config"]["valid"] is True
    assert set(health["eventLoop"]) >= {"degraded", "delayP99Ms", "utilization"}
    again = await operator.call("health", {"probe": True})
    assert again["ts"] >= health["ts"]
    assert frame_validator.checked["health"] == 2


async def test_status(gateway: GatewayHandle, operator: ProtoClient) -> None:
    status = await operator.call("status")
    assert status["runtimeVersion"] == "0.1.0"
    assert status["gateway"]["url"] == gateway.url
    assert status["gateway"]["authMode"] == "token"
    assert status["gateway"]["connections"] == 1
    assert status["processMemory"]["rssBytes"] > 10 * 1024 * 1024
    assert status["sessions"]["byAgent"][0]["agentId"] == "main"
    assert status["channelSummary"] == []
    assert status["config"]["valid"] is True


async def test_last_heartbeat_is_null(operator: ProtoClient) -> None:
    res = await operator.request("last-heartbeat")
    assert res["ok"] is True
    assert res["payload"] is None


async def test_channels_status_when_none_are_configured(
    operator: ProtoClient, frame_validator: FrameValidator
) -> None:
    result = await operator.call("channels.status")
    assert result["channels"] == {}
    assert result["channelOrder"] == []
    assert frame_validator.checked["ChannelsStatusResult"] == 1


CONFIG = """
[agents]
default = "work"

[[agents.list]]
id = "main"

[[agents.list]]
id = "work"
name = "Work"
model = "anthropic/claude-sonnet-4-5"
workspace = "~/work-notes"

[session]
main_key = "home"

[[models.catalog]]
id = "claude-sonnet-4-5"
provider = "anthropic"
name = "Claude Sonnet 4.5"
context_window = 200000
reasoning = true
input = ["text", "image"]

[[models.catalog]]
id = "llama3.2"
provider = "ollama"
"""


async def test_agents_and_models_from_config(
    start_gateway: StartGateway, make_client: MakeClient, frame_validator: FrameValidator
) -> None:
    handle = await start_gateway(CONFIG)
    client = make_client(handle.url)
    hello = await client.connect(token=handle.token)
    defaults = hello["payload"]["snapshot"]["sessionDefaults"]
    assert (defaults["mainKey"], defaults["mainSessionKey"]) == ("home", "agent:work:home")
    agents = await client.call("agents.list")
    assert agents["defaultId"] == "work"
    assert agents["mainKey"] == "home"
    assert agents["agents"][1]["workspace"] == str(Path.home() / "work-notes")
    assert [a["id"] for a in agents["agents"]] == ["main", "work"]
    assert agents["agents"][1]["model"] == {"primary": "anthropic/claude-sonnet-4-5"}
    assert agents["agents"][1]["name"] == "Work"
    models = await client.call("models.list")
    assert sorted(models["models"], key=lambda m: m["id"]) == [
        {
            "id": "claude-sonnet-4-5",
            "name": "Claude Sonnet 4.5",
            "provider": "anthropic",
            "input": ["text", "image"],
            "reasoning": True,
            "contextWindow": 200000,
        },
        {
            "id": "llama3.2",
            "name": "llama3.2",
            "provider": "ollama",
            "input": ["text"],
            "reasoning": False,
        },
    ]
    health = await client.call("health")
    assert health["defaultAgentId"] == "work"
    assert frame_validator.checked["AgentsListResult"] == 1
    assert frame_validator.checked["ModelsListResult"] == 1


def _write_lines(path: Path, count: int, start: int = 0) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for i in range(start, start + count):
            fh.write(json.dumps({"message": f"line {i}"}) + "\n")


def test_log_slice_cursor_semantics(tmp_path: Path) -> None:
    log = tmp_path / "moltis.log"
    missing = read_log_slice(log, None, 10, 1000)
    assert missing == {
        "file": str(log),
        "cursor": 0,
        "size": 0,
        "lines": [],
        "truncated": False,
        "reset": False,
    }
    _write_lines(log, 5)
    first = read_log_slice(log, None, 3, 100_000)
    assert [json.loads(x)["message"] for x in first["lines"]] == ["line 2", "line 3", "line 4"]
    assert first["truncated"] is True  # limit applied: the oldest went
    assert first["cursor"] == log.stat().st_size
    with log.open("a") as fh:
        fh.write('{"message": "partial')  # a line still being written
    _write_lines(tmp_path / "other", 0)
    nothing_new = read_log_slice(log, first["cursor"], 10, 100_000)
    assert nothing_new["lines"] == []
    assert nothing_new["cursor"] == first["cursor"]  # the partial line is not consumed
    with log.open("a") as fh:
        fh.write(' line"}\n')
    finished = read_log_slice(log, first["cursor"], 10, 100_000)
    assert [json.loads(x)["message"] for x in finished["lines"]] == ["partial line"]
    # Rotation: the cursor is past the end of the new file.
    log.write_text(json.dumps({"message": "after rotation"}) + "\n")
    rotated = read_log_slice(log, finished["cursor"], 10, 100_000)
    assert rotated["reset"] is True
    assert [json.loads(x)["message"] for x in rotated["lines"]] == ["after rotation"]
    # A gap larger than maxBytes skips ahead.
    _write_lines(log, 200, start=1)
    skipped = read_log_slice(log, 0, 1000, 500)
    assert skipped["reset"] is True
    assert skipped["truncated"] is True
    assert skipped["skippedBytes"] == log.stat().st_size - 500
    messages = [json.loads(x)["message"] for x in skipped["lines"]]
    assert messages  # the last 500 bytes hold whole lines, the newest last
    assert messages[-1] == "line 200"
    assert messages == [f"line {i}" for i in range(201 - len(messages), 201)]


async def test_logs_tail_reads_the_gateways_own_log(
    gateway: GatewayHandle, operator: ProtoClient, frame_validator: FrameValidator
) -> None:
    logging.getLogger("moltis_desktop.test").warning("marker %s", "for logs.tail")
    result = await operator.call("logs.tail", {"limit": 50})
    assert result["file"] == str(gateway.log_file)
    records = [json.loads(line) for line in result["lines"]]
    marker = [r for r in records if r["message"] == "marker for logs.tail"]
    assert marker
    assert marker[0]["_meta"]["logLevelName"] == "WARN"
    assert marker[0]["subsystem"] == "test"
    later = await operator.call("logs.tail", {"cursor": result["cursor"]})
    assert all(json.loads(x)["message"] != "marker for logs.tail" for x in later["lines"])
    assert frame_validator.checked["LogsTailResult"] == 2


async def test_config_schema(operator: ProtoClient, frame_validator: FrameValidator) -> None:
    result = await operator.call("config.schema")
    assert frame_validator.checked["ConfigSchemaResponse"] == 1
    hint = result["uiHints"]["gateway.port"]
    assert "TCP port" in hint["help"]
    assert "restart" in hint["tags"]
    assert result["uiHints"]["gateway.auth.token_secret"]["tags"] == ["secret-name"]
    props = result["schema"]["$defs"]["GatewaySettings"]["properties"]
    assert props["port"]["default"] == 18789
    assert "milliseconds" in props["tick_interval_ms"]["description"]
