"""Config files on disk: formats, ${VAR} expansion, precedence, validation, atomic writes,
broken files, hot reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moltis_desktop.config.loader import ConfigError, Format
from moltis_desktop.config.store import ConfigStore, text_hash

TOML = """# my gateway
[gateway]
port = 18800  # the port I like
bind = "${BIND_ADDR:-loopback}"

[logging]
level = "debug"
"""
YAML = """gateway:
  port: 18800
  bind: ${BIND_ADDR:-loopback}
logging:
  level: debug
"""
JSON = json.dumps(
    {"gateway": {"port": 18800, "bind": "${BIND_ADDR:-loopback}"}, "logging": {"level": "debug"}}
)


@pytest.mark.parametrize(
    ("name", "text"),
    [("moltis.toml", TOML), ("moltis.yaml", YAML), ("moltis.yml", YAML), ("moltis.json", JSON)],
)
def test_every_format_loads(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    store = ConfigStore(path, env={})
    assert store.error is None
    settings = store.current.settings
    assert settings.gateway.port == 18800
    assert settings.gateway.bind == "loopback"
    assert settings.logging.level == "debug"
    store = ConfigStore(path, env={"BIND_ADDR": "10.1.2.3"})
    assert store.current.settings.gateway.bind == "10.1.2.3"


def test_env_expansion_everywhere_and_escapes(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text(
        '[[agents.list]]\nid = "${AGENT}"\nworkspace = "${HOME}/ws"\n'
        'name = "$${not expanded}"\n[agents]\n'
    )
    path.write_text(
        '[agents]\ndefault = "${AGENT}"\n[[agents.list]]\nid = "${AGENT}"\n'
        'workspace = "${HOME}/ws"\nname = "$${literal}"\n'
    )
    store = ConfigStore(path, env={"AGENT": "helper", "HOME": "/home/me"})
    agent = store.current.settings.agents.list[0]
    assert (agent.id, agent.workspace, agent.name) == ("helper", "/home/me/ws", "${literal}")
    assert store.current.parsed["agents"]["list"][0]["id"] == "${AGENT}"  # raw stays raw


def test_missing_env_var_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text('[gateway]\nbind = "${NOT_SET_ANYWHERE}"\n')
    store = ConfigStore(path, env={})
    assert store.error is not None
    assert str(path) in str(store.error)
    assert "gateway.bind" in str(store.error)
    assert "NOT_SET_ANYWHERE" in str(store.error)
    assert store.current.source == "defaults"


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text("[gateway]\nport = 1111\ntick_interval_ms = 5000\n")
    defaults = ConfigStore(tmp_path / "absent.toml", env={}).current.settings
    assert defaults.gateway.port == 18789
    from_file = ConfigStore(path, env={}).current.settings
    assert (from_file.gateway.port, from_file.gateway.tick_interval_ms) == (1111, 5000)
    env = {"MOLTIS_GATEWAY__PORT": "2222", "MOLTIS_LOG_LEVEL": "warning"}
    from_env = ConfigStore(path, env=env).current.settings
    assert (from_env.gateway.port, from_env.gateway.tick_interval_ms) == (2222, 5000)
    assert from_env.logging.level == "warning"
    from_flags = ConfigStore(path, env=env, overrides={"gateway": {"port": 3333}})
    assert from_flags.current.settings.gateway.port == 3333
    assert from_flags.current.settings.logging.level == "warning"
    alias_and_full = ConfigStore(path, env={"MOLTIS_PORT": "4444", "MOLTIS_GATEWAY__PORT": "5555"})
    assert alias_and_full.current.settings.gateway.port == 5555


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ('[gateway.auth]\nmode = "tokn"\n', "gateway.auth.mode", "'token', 'password', 'none'"),
        ('[gateway]\nport = "eighty"\n', "gateway.port", "an integer"),
        ("[gateway]\nport = 99999\n", "gateway.port", "0-65535"),
        ('[logging]\nlevel = "loud"\n', "logging.level", "'debug', 'info', 'warning', 'error'"),
        ('[[agents.list]]\nname = "x"\n', "agents.list[0]", "id, name, model, fallbacks"),
        ("[gateway]\nmax_payload = 10\n", "gateway.max_payload", "at least 1024"),
        ('[agents]\ndefault = "ghost"\n', "agents.default", "'main'"),
    ],
)
def test_validation_errors_name_file_key_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text(text)
    store = ConfigStore(path, env={})
    error = store.error
    assert isinstance(error, ConfigError)
    assert error.file == path
    assert error.key == key
    message = str(error)
    assert str(path) in message
    assert f"`{key}`" in message
    assert allowed in message


def test_syntax_error_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text("[gateway\nport = 1\n")
    store = ConfigStore(path, env={})
    assert store.error is not None
    assert "not valid TOML" in str(store.error)
    assert str(path) in str(store.error)


def test_unknown_keys_warn_and_do_not_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text(
        '[gateway]\nprot = 1\nport = 1234\n[gateway.auth]\ntoken = "s3cr3t-value"\n'
        "[surprise]\nx = 1\n"
    )
    store = ConfigStore(path, env={})
    assert store.error is None
    assert store.current.settings.gateway.port == 1234
    warnings = "\n".join(store.current.warnings)
    assert "unknown key `gateway.prot` is ignored (did you mean `port`?)" in warnings
    assert "unknown key `surprise`" in warnings
    assert "`gateway.auth.token` looks like a secret written in plain text" in warnings
    assert "s3cr3t-value" not in warnings
    assert "unknown key `gateway.prot`" in caplog.text


def test_broken_file_at_start_uses_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text("[gateway]\nport = 1234\n")
    assert ConfigStore(path, env={}).current.settings.gateway.port == 1234
    path.write_text("[gateway]\nport = 'oops'\n")
    store = ConfigStore(path, env={})
    assert store.error is not None
    assert store.current.source == "last-good"
    assert store.current.settings.gateway.port == 1234


def test_writes_are_validated_atomic_and_keep_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text(TOML)
    store = ConfigStore(path, env={})
    with pytest.raises(ConfigError, match=r"gateway\.port"):
        store.write_raw("[gateway]\nport = 'x'\n", store.current.hash)
    assert path.read_text() == TOML  # refused writes leave the file alone
    snap = store.patch(
        {"gateway": {"port": 18801, "tick_interval_ms": 20000}, "logging": {"level": None}},
        store.current.hash,
    )
    text = path.read_text()
    assert "# my gateway" in text
    assert "# the port I like" in text  # comments survive a TOML patch
    assert "port = 18801" in text
    assert "level" not in text
    assert snap.settings.gateway.tick_interval_ms == 20000
    assert (tmp_path / "moltis.toml.bak").read_text() == TOML
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="changed since it was read"):
        store.write_raw(TOML, text_hash(TOML))  # stale hash


def test_patch_yaml_and_json(tmp_path: Path) -> None:
    for name, text in (("moltis.yaml", YAML), ("moltis.json", JSON)):
        path = tmp_path / name
        path.write_text(text)
        store = ConfigStore(path, env={})
        store.patch({"gateway": {"port": 19999}}, store.current.hash)
        again = ConfigStore(path, env={})
        assert again.current.settings.gateway.port == 19999
        assert again.current.parsed["gateway"]["bind"] == "${BIND_ADDR:-loopback}"


WRITER = """
import sys
from pathlib import Path
from moltis_desktop.config.store import ConfigStore
store = ConfigStore(Path(sys.argv[1]), env={})
print("ready", flush=True)
i = 0
while True:
    i += 1
    store.write_raw("[gateway]\\nport = %d\\n# " % (1024 + i % 60000) + "x" * 200000 + "\\n")
"""


def test_kill_during_writes_leaves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text("[gateway]\nport = 1024\n")
    for delay in (0.15, 0.3, 0.45):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        store = ConfigStore(path, env={})
        assert store.error is None, store.error
        assert 1024 <= store.current.settings.gateway.port < 61024
    # A killed writer may leave a temp file behind; a later start clears old ones away,
    # but not a fresh one (another process may be writing it right now).
    for leftover in tmp_path.glob("*.tmp"):
        os.utime(leftover, (time.time() - 120, time.time() - 120))
    stale, fresh = tmp_path / ".moltis.toml.old.tmp", tmp_path / ".moltis.toml.new.tmp"
    stale.write_text("x")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    fresh.write_text("y")
    ConfigStore(path, env={})
    assert list(tmp_path.glob("*.tmp")) == [fresh]


async def test_hot_reload_and_broken_edits(tmp_path: Path) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text("[gateway]\ntick_interval_ms = 1000\n")
    store = ConfigStore(path, env={})
    changes: list[int] = []
    store.subscribe(lambda old, new: changes.append(new.settings.gateway.tick_interval_ms))
    watcher = asyncio.create_task(store.watch(interval_s=0.05))
    try:
        path.write_text("[gateway]\ntick_interval_ms = 2000\n")
        await _until(lambda: changes == [2000])
        path.write_text("[gateway]\ntick_interval_ms = 'nope'\n")
        await _until(lambda: store.error is not None)
        assert store.current.settings.gateway.tick_interval_ms == 2000  # last good stays
        path.write_text("[gateway]\ntick_interval_ms = 3000\n")
        await _until(lambda: store.error is None and changes == [2000, 3000])
        path.unlink()
        await _until(lambda: changes == [2000, 3000, 30000])  # back to defaults
    finally:
        watcher.cancel()


async def _until(condition: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# Line-by-line redaction of a file that does not parse: (format, text, the secrets in it).
BROKEN_LAYOUTS = [
    ("toml", 'a.b.api_key = "sk-proj-Ab12Cd34Ef56Gh78Ij90"\n[[x\n', ["sk-proj-Ab12Cd34Ef56"]),
    ("toml", "password = 'no closing quote pw\n[x\n", ["no closing quote pw"]),
    ("toml", 'bot_token = """\nmulti-line-secret\n"""\n= 1\n', ["multi-line-secret"]),
    ("yaml", "a:\n  - secret: |\n      block-secret-1\n      block-secret-2\nb: [\n",
     ["block-secret-1", "block-secret-2"]),
    ("yaml", "a: b\n  clientSecret: plain words secret\n", ["plain words secret"]),
    ("json", '{"auth": {"token": "json-secret-value-1",}}', ["json-secret-value-1"]),
    ("json", "{auth: {refresh_token: 'json5-secret-value'}, // c\n}", ["json5-secret-value"]),
    ("toml", 'slack = "xoxb-1234567890-abcdefghij"\n[x\n', ["xoxb-1234567890-abcdefghij"]),
    ("toml", 'u = "https://x/?key=AIzaSyA1234567890abcdefghijklmnopqrstu"\n[x\n',
     ["AIzaSyA1234567890abcdefghijklmnopqrstu"]),
    ("toml", 'gh = "ghp_0123456789abcdefABCDEF0123456789"\n[x\n',
     ["ghp_0123456789abcdefABCDEF0123456789"]),
    ("toml", "digest = 0123456789abcdef0123456789abcdef01\n[x\n",
     ["0123456789abcdef0123456789abcdef01"]),
    ("toml", 'blob = "Qm9vbXNoYWthbGFrYTEyMzQ1Njc4OTBhYmNkZWY="\n[x\n',
     ["Qm9vbXNoYWthbGFrYTEyMzQ1Njc4OTBhYmNkZWY="]),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "raw", "secrets"), BROKEN_LAYOUTS)
def test_a_broken_file_is_redacted_line_by_line(fmt: Format, raw: str, secrets: list[str]) -> None:
    from moltis_desktop.config.store import redact_text, restore_redacted

    redacted = redact_text(raw, fmt)
    assert "__OPENCLAW_REDACTED__" in redacted
    for secret in secrets:
        assert secret not in redacted
    assert restore_redacted(redacted, raw, fmt) == raw


def test_a_broken_file_keeps_what_is_no_secret() -> None:
    from moltis_desktop.config.store import redact_text

    raw = (
        'url = "http://127.0.0.1:8080/v1"\nmodel = "claude-sonnet-4-20250514"\n'
        'path = "/home/me/projects/moltis/workspace"\nask = "the task-force report"\n[[x\n'
    )
    assert redact_text(raw, "toml") == raw


def test_a_secret_the_process_knows_is_redacted_anywhere() -> None:
    from moltis_desktop.config.store import redact_text
    from moltis_desktop.core.logging import REDACTOR

    REDACTOR.add("known-secret-0xA1B2")
    assert redact_text('note = "known-secret-0xA1B2"\n[x\n', "toml") == (
        'note = "__OPENCLAW_REDACTED__"\n[x\n'
    )
