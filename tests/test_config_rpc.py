"""config.* over the wire: raw + hash, baseHash concurrency, patches, apply with rebind,
a broken file while the gateway runs, redaction."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import TOKEN, GatewayHandle, MakeClient, StartGateway
from tests.support.process import free_port
from tests.support.wsclient import ProtoClient

CONFIG = """# kept comment
[gateway]
tick_interval_ms = 30000  # the default, written out
"""


async def _admin(handle: GatewayHandle, make_client: MakeClient) -> ProtoClient:
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=["operator.admin"])
    assert res["ok"], res
    return client


async def test_config_get(start_gateway: StartGateway, make_client: MakeClient) -> None:
    handle = await start_gateway(CONFIG)
    client = await _admin(handle, make_client)
    snap = await client.call("config.get")
    assert snap["path"] == str(handle.config_file)
    assert snap["exists"] is True
    assert snap["raw"] == CONFIG
    assert snap["valid"] is True
    assert snap["parsed"] == {"gateway": {"tick_interval_ms": 30000}}
    assert snap["config"]["gateway"]["port"] == 0  # the effective config (flags included)
    assert snap["config"]["gateway"]["bind"] == "loopback"  # defaults included
    assert snap["config"]["gateway"]["tick_interval_ms"] == 30000
    import hashlib

    assert snap["hash"] == hashlib.sha256(CONFIG.encode()).hexdigest()


async def test_config_get_without_a_file(gateway: GatewayHandle, operator: ProtoClient) -> None:
    snap = await operator.call("config.get")
    assert snap["exists"] is False
    assert snap["raw"] is None
    assert snap["config"]["gateway"]["auth"]["mode"] == "token"


async def test_set_requires_and_checks_base_hash(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(CONFIG)
    client = await _admin(handle, make_client)
    new = CONFIG + '\n[logging]\nlevel = "debug"\n'
    res = await client.request("config.set", {"raw": new})
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "config base hash required; re-run config.get and retry",
    }
    res = await client.request("config.set", {"raw": new, "baseHash": "0" * 64})
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "config changed since last load; re-run config.get and retry",
    }
    base = (await client.call("config.get"))["hash"]
    result = await client.call("config.set", {"raw": new, "baseHash": base})
    assert result["ok"] is True
    assert result["config"]["logging"]["level"] == "debug"
    assert handle.config_file.read_text() == new
    assert handle.gateway.state.settings.logging.level == "debug"  # applied at once


async def test_concurrent_sets_with_the_same_base_hash(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(CONFIG)
    clients = [await _admin(handle, make_client) for _ in range(5)]
    base = (await clients[0].call("config.get"))["hash"]
    results = await asyncio.gather(
        *(
            c.request(
                "config.set",
                {"raw": f"[gateway]\ntick_interval_ms = {1000 * (i + 1)}\n", "baseHash": base},
            )
            for i, c in enumerate(clients)
        )
    )
    winners = [r for r in results if r["ok"]]
    losers = [r for r in results if not r["ok"]]
    assert len(winners) == 1
    assert len(losers) == 4
    assert all("config changed since last load" in r["error"]["message"] for r in losers)
    written = handle.config_file.read_text()
    assert winners[0]["payload"]["hash"] == (await clients[0].call("config.get"))["hash"]
    # The file is the winner's text, whole: none of the losers wrote any of theirs.
    (winner,) = [i for i, r in enumerate(results) if r["ok"]]
    assert written == f"[gateway]\ntick_interval_ms = {1000 * (winner + 1)}\n"


async def test_invalid_config_is_refused_with_the_key(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(CONFIG)
    client = await _admin(handle, make_client)
    base = (await client.call("config.get"))["hash"]
    res = await client.request("config.set", {"raw": "[gateway]\nport = 'x'\n", "baseHash": base})
    error = res["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("invalid config: gateway.port:")
    assert error["details"]["issues"][0]["path"] == "gateway.port"
    assert handle.config_file.read_text() == CONFIG


async def test_patch_keeps_comments_and_reports_changes(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(CONFIG)
    client = await _admin(handle, make_client)
    watcher = make_client(handle.url)
    await watcher.connect(token=handle.token, scopes=["operator.read"])
    base = (await client.call("config.get"))["hash"]
    patch = {"gateway": {"tick_interval_ms": 15000, "cors": {"allowed_origins": ["https://a"]}}}
    result = await client.call("config.patch", {"raw": json.dumps(patch), "baseHash": base})
    assert result["changedPaths"] == ["gateway.cors", "gateway.tick_interval_ms"]
    text = handle.config_file.read_text()
    assert "# kept comment" in text
    assert "tick_interval_ms = 15000" in text
    changed = await watcher.next_event("config.changed")
    assert changed["payload"]["hash"] == result["hash"]
    noop = await client.call("config.patch", {"raw": json.dumps(patch)})
    assert noop["noop"] is True
    res = await client.request("config.patch", {"raw": "[1, 2]", "baseHash": result["hash"]})
    assert res["error"]["message"] == "config.patch raw must be an object"
    res = await client.request(
        "config.patch", {"raw": json.dumps({"logging": {"level": "x"}}), "baseHash": result["hash"]}
    )
    assert "logging.level" in res["error"]["message"]


async def test_apply_with_a_new_port_rebinds(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    first, second = free_port(), free_port()
    handle = await start_gateway(f"[gateway]\nport = {first}\n", port=None)
    assert handle.gateway.state.port == first
    client = await _admin(handle, make_client)
    base = (await client.call("config.get"))["hash"]
    result = await client.call(
        "config.apply",
        {"raw": f"[gateway]\nport = {second}\n", "baseHash": base, "restartDelayMs": 100},
    )
    assert result["restart"] == {
        "ok": True,
        "keys": ["gateway.port"],
        "delayMs": 100,
        "mode": "rebind",
    }
    for _ in range(100):
        if handle.gateway.state.port == second:
            break
        await asyncio.sleep(0.05)
    assert handle.gateway.state.port == second
    fresh = make_client(f"ws://127.0.0.1:{second}")
    assert (await fresh.connect(token=handle.token))["ok"]
    assert (await client.call("health"))["ok"]  # the open connection survived the move


async def test_broken_file_while_running(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(CONFIG)
    client = await _admin(handle, make_client)
    handle.config_file.write_text("[gateway]\ntick_interval_ms = 'soon'\n")
    for _ in range(100):
        health = await client.call("health", {"probe": True})
        if not health["config"]["valid"]:
            break
        await asyncio.sleep(0.05)
    config = health["config"]
    assert config["valid"] is False
    assert config["key"] == "gateway.tick_interval_ms"
    assert "Expected `int`" in config["error"]
    assert handle.gateway.state.settings.gateway.tick_interval_ms == 30000  # the last good one
    snap = await client.call("config.get")
    assert snap["valid"] is False
    assert snap["issues"][0]["path"] == "gateway.tick_interval_ms"
    # The broken file can be replaced over the protocol (its hash is the broken text's).
    await client.call("config.set", {"raw": CONFIG, "baseHash": snap["hash"]})
    health = await client.call("health", {"probe": True})
    assert health["config"]["valid"] is True
    # The gateway logged the problem.
    assert "config change rejected" in handle.log_file.read_text()


async def test_secret_values_in_config_are_redacted(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    secret = "plain-text-secret-value-42"
    text = f'[gateway.auth]\nmode = "token"\ntoken = "{secret}"\n'
    handle = await start_gateway(text)
    client = await _admin(handle, make_client)
    snap = await client.call("config.get")
    dumped = json.dumps(snap)
    assert secret not in dumped
    assert '"__OPENCLAW_REDACTED__"' in snap["raw"]
    assert snap["parsed"]["gateway"]["auth"]["token"] == "__OPENCLAW_REDACTED__"
    assert any("looks like a secret" in w for w in snap["warnings"])
    # Writing the redacted text back keeps the real value in the file.
    edited = snap["raw"].replace('mode = "token"', 'mode = "token"\nlockout_s = 10.0')
    await client.call("config.set", {"raw": edited, "baseHash": snap["hash"]})
    assert secret in handle.config_file.read_text()
    assert "lockout_s = 10.0" in handle.config_file.read_text()


# A broken file (security review, finding 3): its text cannot be redacted by its keys.
SK = "sk-ant-api03-Zx81nQ4kPz0aLm3VvBq7Rt2YwE9uHs6"
BROKEN = {
    "moltis.toml": (
        "[gateway]\ntick_interval_ms = 30000\n\n[providers.anthropic]\n"
        f'api_key = "{SK}"\nnote = "{TOKEN}"\n[[broken\n'
    ),
    "moltis.yaml": (
        "gateway:\n  tick_interval_ms: 30000\nproviders:\n  anthropic:\n"
        f"    api_key: {SK}\n   note: {TOKEN}\n"
    ),
    "moltis.json": (
        '{"gateway": {"tick_interval_ms": 30000},\n'
        f' "providers": {{"anthropic": {{"api_key": "{SK}"}}}},\n "note": "{TOKEN}",}}\n'
    ),
}


async def _reader(handle: GatewayHandle, make_client: MakeClient) -> ProtoClient:
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=["operator.read"])
    assert res["ok"], res
    return client


@pytest.mark.parametrize("name", sorted(BROKEN))
async def test_a_broken_file_leaks_no_secret(
    start_gateway: StartGateway, make_client: MakeClient, name: str
) -> None:
    handle = await start_gateway(BROKEN[name], config_name=name)
    reader = await _reader(handle, make_client)
    snap = await reader.call("config.get")
    assert snap["valid"] is False and snap["exists"] is True
    assert snap["issues"] and "line" in snap["issues"][0]["message"]
    # A read-only device gets no text of a file that cannot be redacted by its keys.
    assert snap["raw"] is None and snap["parsed"] is None
    health = await reader.call("health", {"probe": True})
    assert health["config"]["valid"] is False
    for answer in (snap, health):
        dumped = json.dumps(answer)
        assert SK not in dumped and SK[:20] not in dumped
        assert TOKEN not in dumped
    # The owner gets it, redacted line by line, and can fix it without retyping the key.
    admin = await _admin(handle, make_client)
    snap = await admin.call("config.get")
    raw = snap["raw"]
    assert SK not in raw and TOKEN not in raw and SK[:20] not in json.dumps(snap)
    assert raw.count("__OPENCLAW_REDACTED__") == 2
    fixed = {
        "moltis.toml": lambda r: r.replace("[[broken\n", ""),
        "moltis.yaml": lambda r: r.replace("   note:", "    note:"),
        "moltis.json": lambda r: r.replace('",}', '"}'),
    }[name](raw)
    await admin.call("config.set", {"raw": fixed, "baseHash": snap["hash"]})
    text = handle.config_file.read_text()
    assert SK in text and TOKEN in text  # put back from the file on disk
    assert (await reader.call("config.get"))["valid"] is True


async def test_a_valid_file_is_redacted_for_a_reader_too(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(f'[gateway.auth]\nmode = "token"\ntoken = "{SK}"\n')
    snap = await (await _reader(handle, make_client)).call("config.get")
    assert SK not in json.dumps(snap)
    assert snap["raw"] == '[gateway.auth]\nmode = "token"\ntoken = "__OPENCLAW_REDACTED__"\n'
