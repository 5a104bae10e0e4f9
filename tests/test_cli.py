"""The `moltis` and `moltis-desktop` commands, run as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.process import BIN, base_env, free_port, gateway_process, wait_ready


def moltis(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "moltis"), *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )


def test_health_status_call_against_a_running_gateway(tmp_path: Path) -> None:
    with gateway_process(tmp_path / "home") as gw:
        env = {**gw.env, "MOLTIS_URL": gw.url}
        health = moltis(env, "health")
        assert health.returncode == 0, health.stderr
        assert "Gateway: ok" in health.stdout
        assert "Agents: main (default)" in health.stdout
        as_json = moltis(env, "health", "--json")
        assert json.loads(as_json.stdout)["ok"] is True
        status = moltis(env, "status")
        assert status.returncode == 0, status.stderr
        assert f"at {gw.url}" in status.stdout
        data = json.loads(moltis(env, "status", "--json").stdout)
        assert data["gateway"]["port"] == gw.port
        called = moltis(env, "call", "system-presence")
        assert json.loads(called.stdout)[0]["mode"] == "gateway"
        params = moltis(env, "call", "logs.tail", "--params", '{"limit": 1}')
        assert len(json.loads(params.stdout)["lines"]) == 1
        bad = moltis(env, "call", "logs.tail", "--params", "{nope")
        assert bad.returncode == 1
        assert "--params is not valid JSON" in bad.stderr


def test_wrong_token_and_unreachable_gateway(tmp_path: Path) -> None:
    with gateway_process(tmp_path / "home") as gw:
        env = {**gw.env, "MOLTIS_URL": gw.url}
        wrong = moltis(env, "health", "--token", "not-the-token")
        assert wrong.returncode == 1
        assert "unauthorized: gateway token mismatch" in wrong.stderr
        assert "not-the-token" not in gw.output()
    gone = moltis({**env}, "health")
    assert gone.returncode == 2
    assert "cannot reach the gateway" in gone.stderr
    assert "moltis gateway" in gone.stderr


def test_token_comes_from_the_secret_store_when_not_given(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with gateway_process(home, token=None, MOLTIS_SECRETS_PASSPHRASE="correct horse") as gw:
        env = base_env(home, MOLTIS_SECRETS_PASSPHRASE="correct horse", MOLTIS_URL=gw.url)
        health = moltis(env, "health")
        assert health.returncode == 0, health.stderr
        listed = moltis(env, "secrets", "list")
        assert listed.stdout.split() == ["gateway-token"]
        assert "encrypted file" in listed.stderr
        token = moltis(env, "secrets", "get", "gateway-token").stdout.strip()
        assert len(token) >= 40
        assert token not in gw.output()
        assert token not in (home / "logs" / "moltis.log").read_text()


def post_json(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_dashboard_prints_a_one_time_sign_in_link(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with gateway_process(home, token=None, MOLTIS_SECRETS_PASSPHRASE="correct horse") as gw:
        # No --url, no token: the port from the config, the token from the secret store.
        env = base_env(home, MOLTIS_SECRETS_PASSPHRASE="correct horse", MOLTIS_PORT=str(gw.port))
        token = moltis(env, "secrets", "get", "gateway-token").stdout.strip()
        assert len(token) >= 40
        origin = f"http://127.0.0.1:{gw.port}"
        shown = moltis(env, "dashboard", "--no-open")
        assert shown.returncode == 0, shown.stderr
        link = shown.stdout.strip()
        assert link.startswith(f"{origin}/#ticket="), link
        assert "once, within a minute" in shown.stderr
        assert token not in shown.stdout + shown.stderr
        ticket = link.split("#ticket=", 1)[1]
        # The page (same origin as the gateway) trades the ticket for the credential, once.
        redeem = f"{origin}/ui/redeem"
        assert post_json(redeem, {"ticket": ticket}, {"Origin": origin}) == (
            200,
            {"mode": "token", "auth": {"token": token}},
        )
        status, body = post_json(redeem, {"ticket": ticket}, {"Origin": origin})
        assert status == 401, body
        as_json = moltis(env, "dashboard", "--no-open", "--json")
        assert as_json.returncode == 0, as_json.stderr
        answer = json.loads(as_json.stdout)
        assert answer["url"] == f"{origin}/#ticket={answer['ticket']}"
        assert post_json(redeem, {"ticket": answer["ticket"]}, {"Origin": origin})[0] == 200


def test_dashboard_with_a_stale_token_or_no_gateway(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = base_env(home, MOLTIS_SECRETS_PASSPHRASE="pw-1234")
    stale = "stale-token-0123456789"
    stored = moltis(env, "secrets", "set", "gateway-token", stdin=stale + "\n")
    assert stored.returncode == 0, stored.stderr
    # The gateway runs on MOLTIS_TOKEN, so the stored token is not its token.
    with gateway_process(home, MOLTIS_SECRETS_PASSPHRASE="pw-1234") as gw:
        assert gw.token is not None
        env["MOLTIS_URL"] = gw.url
        refused = moltis(env, "dashboard", "--no-open")
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert "token in the secret store: it does not match the running gateway" in (
            refused.stderr
        )
        assert stale not in refused.stderr
        wrong = moltis(env, "dashboard", "--no-open", "--token", "not-the-token")
        assert wrong.returncode == 1
        assert "refused the token given with --token" in wrong.stderr
        given = moltis(env, "dashboard", "--no-open", "--token", gw.token)
        assert given.returncode == 0, given.stderr
        assert given.stdout.startswith(f"http://127.0.0.1:{gw.port}/#ticket=")
    gone = moltis(env, "dashboard", "--no-open")
    assert gone.returncode == 2
    assert "cannot reach the gateway" in gone.stderr
    assert "Start it with `moltis gateway`" in gone.stderr


def test_config_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with gateway_process(home) as gw:
        env = {**gw.env, "MOLTIS_URL": gw.url}
        path = moltis(env, "config", "path").stdout.strip()
        assert path == str(home / "config" / "moltis.toml")
        assert moltis(env, "config", "get", "gateway.tick_interval_ms").stdout.strip() == "30000"
        changed = moltis(env, "config", "set", "gateway.tick_interval_ms", "20000")
        assert changed.returncode == 0, changed.stderr
        assert "the gateway applied it" in changed.stdout
        assert "tick_interval_ms = 20000" in Path(path).read_text()
        assert moltis(env, "config", "get", "gateway.tick_interval_ms").stdout.strip() == "20000"
        refused = moltis(env, "config", "set", "logging.level", "loud")
        assert refused.returncode == 1
        assert "logging.level" in refused.stderr
        assert "'debug', 'info', 'warning', 'error'" in refused.stderr
        missing = moltis(env, "config", "get", "gateway.nope")
        assert missing.returncode == 1
        assert "no config key" in missing.stderr
    # With no gateway running, get/set work on the file.
    offline = moltis(env, "config", "set", "logging.level", "debug")
    assert offline.returncode == 0, offline.stderr
    assert "saved to the file" in offline.stdout
    assert "using the config file directly" in offline.stderr
    assert moltis(env, "config", "get", "logging.level").stdout.strip() == "debug"
    valid = moltis(env, "config", "validate")
    assert valid.returncode == 0
    assert valid.stdout.strip().endswith("moltis.toml: valid"), valid.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  port: [1]\n")
    invalid = moltis(env, "config", "validate", str(bad))
    assert invalid.returncode == 1
    assert "gateway.port" in invalid.stdout
    report = json.loads(moltis(env, "config", "validate", str(bad), "--json").stdout)
    assert report["valid"] is False
    assert report["key"] == "gateway.port"


def test_config_edit_validates_before_saving(tmp_path: Path) -> None:
    home = tmp_path / "home"
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf '[gateway]\\nport = 18555\\n' > \"$1\"\n")
    editor.chmod(0o755)
    env = base_env(home, EDITOR=str(editor))
    edited = moltis(env, "config", "edit")
    assert edited.returncode == 0, edited.stderr
    assert "port = 18555" in (home / "config" / "moltis.toml").read_text()
    editor.write_text('#!/bin/sh\nprintf \'[gateway]\\nport = "nope"\\n\' > "$1"\n')
    refused = moltis(env, "config", "edit", stdin="")
    assert refused.returncode == 1
    assert "not saved" in refused.stderr
    assert "port = 18555" in (home / "config" / "moltis.toml").read_text()


def test_secrets_set_from_stdin(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home", MOLTIS_SECRETS_PASSPHRASE="pw-987654")
    stored = moltis(env, "secrets", "set", "openai-api-key", stdin="sk-test-value-123\n")
    assert stored.returncode == 0, stored.stderr
    assert moltis(env, "secrets", "get", "openai-api-key").stdout.strip() == "sk-test-value-123"
    assert moltis(env, "secrets", "delete", "openai-api-key").returncode == 0
    assert moltis(env, "secrets", "get", "openai-api-key").returncode == 1


def test_gateway_flags_and_a_busy_port(tmp_path: Path) -> None:
    with gateway_process(tmp_path / "a") as first:
        env = base_env(tmp_path / "b", MOLTIS_TOKEN="t-0123456789")
        busy = subprocess.run(
            [str(BIN / "moltis"), "gateway", "--port", str(first.port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert busy.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in busy.stderr
        assert "--port" in busy.stderr


def test_moltis_desktop_without_a_display_runs_headless(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path / "home", MOLTIS_TOKEN="t-0123456789", MOLTIS_PORT=str(port))
    proc = subprocess.Popen(
        [str(BIN / "moltis-desktop")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(port, proc=proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "no display found" in out
    assert "running the gateway headless" in out
    assert "gateway stopped" in out


GOOD_PLUGIN = '''
from moltis_desktop.agent.tools import tool
from moltis_desktop.core.hooks import hookimpl


@tool()
async def echo_back(ctx, text: str) -> str:
    """Say `text` back."""
    return text


@hookimpl
def register_tools(register):
    register(echo_back)
'''
BAD_PLUGIN = """
from moltis_desktop.core.hooks import hookimpl


@hookimpl
def register_tools(register):
    raise RuntimeError("broken on purpose")
"""


def test_plugins_list_says_which_plugin_gave_what_and_which_failed(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "good_tools.py").write_text(GOOD_PLUGIN)
    (plugins / "bad_tools.py").write_text(BAD_PLUGIN)
    dist = plugins / "test_tools-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: test-tools\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[moltis_desktop.plugins]\ngood_tools = good_tools\nbad_tools = bad_tools\n"
    )
    env = base_env(tmp_path / "home", PYTHONPATH=str(plugins))
    listed = moltis(env, "plugins", "list", "--json")
    assert listed.returncode == 1, listed.stderr  # one plugin failed
    data = json.loads(listed.stdout)
    provided = {p["name"]: {(i["kind"], i["name"]) for i in p["provided"]} for p in data["plugins"]}
    assert provided["good_tools"] == {("tool", "echo_back")}
    assert ("tool", "current_time") in provided["moltis_desktop.tools.builtin"]
    assert ("tool", "canvas") in provided["moltis_desktop.tools.builtin"]
    assert provided["moltis_desktop.providers.builtin"] == {
        ("provider", "anthropic"),
        ("provider", "openai"),
    }
    # The broken plugin is named with its error; the others are not held back by it.
    (error,) = data["errors"]
    assert error["id"] == "bad_tools" and "broken on purpose" in error["error"]
    text = moltis(env, "plugins", "list")
    assert "good_tools\n  tool      echo_back" in text.stdout
    assert "FAILED bad_tools (register_tools): broken on purpose" in text.stdout
