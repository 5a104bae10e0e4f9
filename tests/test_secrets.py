"""The secret store: the OS keyring, the encrypted-file fallback, the gateway token, and
redaction from logs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from moltis_desktop.config.secrets import (
    EncryptedFileBackend,
    KeyringBackend,
    SecretStore,
    SecretStoreError,
)
from moltis_desktop.core.logging import REDACTOR, configure_logging
from moltis_desktop.runtime import Runtime
from tests.support.keyrings import MemoryKeyring


def test_keyring_backend_round_trip(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    store = SecretStore(tmp_path, backend="auto", env={"PYTHON_KEYRING_BACKEND": "x"}, prompt=None)
    assert isinstance(store.backend, KeyringBackend)
    store.set("anthropic-api-key", "sk-ant-0123456789")
    assert memory_keyring.items[("moltis-desktop", "anthropic-api-key")] == "sk-ant-0123456789"
    assert store.get("anthropic-api-key") == "sk-ant-0123456789"
    assert store.names() == ["anthropic-api-key"]
    assert store.delete("anthropic-api-key") is True
    assert store.get("anthropic-api-key") is None
    assert store.delete("anthropic-api-key") is False
    assert store.names() == []
    # The names index holds names only.
    assert "sk-ant" not in (tmp_path / "secret-names.json").read_text()


def test_no_keyring_falls_back_to_the_encrypted_file(tmp_path: Path) -> None:
    # Headless Linux: no D-Bus session, keyring's "fail" backend.
    store = SecretStore(tmp_path, env={"MOLTIS_SECRETS_PASSPHRASE": "pass phrase 1"}, prompt=None)
    assert isinstance(store.backend, EncryptedFileBackend)
    store.set("gateway-token", "tok-abcdef-123456")
    path = tmp_path / "secrets.enc"
    raw = path.read_bytes()
    assert b"tok-abcdef-123456" not in raw
    assert b"gateway-token" not in raw  # names are encrypted too
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(raw)
    assert doc["kdf"] == "scrypt"
    again = SecretStore(tmp_path, env={"MOLTIS_SECRETS_PASSPHRASE": "pass phrase 1"}, prompt=None)
    assert again.get("gateway-token") == "tok-abcdef-123456"


def test_wrong_passphrase_and_no_passphrase(tmp_path: Path) -> None:
    SecretStore(tmp_path, env={"MOLTIS_SECRETS_PASSPHRASE": "right"}, prompt=None).set(
        "a", "value-1"
    )
    wrong = SecretStore(tmp_path, env={"MOLTIS_SECRETS_PASSPHRASE": "wrong"}, prompt=None)
    with pytest.raises(SecretStoreError, match="passphrase does not open"):
        wrong.get("a")
    none = SecretStore(tmp_path, env={}, prompt=None)
    with pytest.raises(SecretStoreError, match="MOLTIS_SECRETS_PASSPHRASE"):
        none.get("a")


def test_prompted_passphrase(tmp_path: Path) -> None:
    asked: list[bool] = []

    def prompt(creating: bool) -> str:
        asked.append(creating)
        return "typed passphrase"

    SecretStore(tmp_path, env={}, prompt=prompt).set("a", "value-1")
    assert SecretStore(tmp_path, env={}, prompt=prompt).get("a") == "value-1"
    assert asked == [True, False]


def test_damaged_secrets_file_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "secrets.enc").write_text("{not json")
    store = SecretStore(tmp_path, env={"MOLTIS_SECRETS_PASSPHRASE": "x"}, prompt=None)
    with pytest.raises(SecretStoreError, match="is damaged"):
        store.get("a")


def test_plain_text_is_never_a_fallback(tmp_path: Path) -> None:
    store = SecretStore(tmp_path, env={}, prompt=None)
    with pytest.raises(SecretStoreError):
        store.set("a", "value-1")
    assert not any(tmp_path.iterdir())


async def test_gateway_token_is_created_once_and_kept(tmp_path: Path) -> None:
    env = {"MOLTIS_HOME": str(tmp_path), "MOLTIS_SECRETS_PASSPHRASE": "pp-123456"}
    first = Runtime(env=env, overrides={"gateway": {"port": 0}}, console=None, prompt=None)
    gateway = await first.start()
    token = gateway.state.shared_secret.token
    assert token
    assert len(token) >= 40
    await first.stop()
    second = Runtime(env=env, overrides={"gateway": {"port": 0}}, console=None, prompt=None)
    gateway = await second.start()
    assert gateway.state.shared_secret.token == token
    await second.stop()
    # Neither the token nor the passphrase reached the log or the config.
    log_text = (tmp_path / "logs" / "moltis.log").read_text()
    assert token not in log_text
    assert "pp-123456" not in log_text
    assert "created secret 'gateway-token'" in log_text


async def test_unusable_store_gives_a_run_only_token_and_says_so(tmp_path: Path) -> None:
    runtime = Runtime(
        env={"MOLTIS_HOME": str(tmp_path)},
        overrides={"gateway": {"port": 0}},
        console=None,
        prompt=None,
    )
    gateway = await runtime.start()
    assert runtime.ephemeral_secret is True
    assert gateway.state.shared_secret.token
    await runtime.stop()
    log_text = (tmp_path / "logs" / "moltis.log").read_text()
    assert "cannot be kept" in log_text
    assert "MOLTIS_SECRETS_PASSPHRASE" in log_text
    assert gateway.state.shared_secret.token not in log_text


def test_log_redaction(tmp_path: Path) -> None:
    log_file = tmp_path / "x.log"
    configure_logging(level="debug", log_file=log_file, console=None)
    REDACTOR.add("super-secret-value-99")
    logger = logging.getLogger("moltis_desktop.test")
    logger.info("connecting with token=%s", "super-secret-value-99")
    try:
        raise ValueError("bad token super-secret-value-99")
    except ValueError:
        logger.exception("failed")
    logger.info("extra", extra={"url": "ws://x/?token=super-secret-value-99"})
    text = log_file.read_text()
    assert "super-secret-value-99" not in text
    assert text.count("[redacted]") >= 3
    assert os.stat(log_file).st_size > 0


def test_encrypted_file_sees_changes_made_by_another_process(tmp_path: Path) -> None:
    env = {"MOLTIS_SECRETS_PASSPHRASE": "shared-pass"}
    gateway_side = SecretStore(tmp_path, env=env, prompt=None)
    cli_side = SecretStore(tmp_path, env=env, prompt=None)
    gateway_side.set("auth-codex", "token-v1-abcdef")
    assert cli_side.get("auth-codex") == "token-v1-abcdef"
    cli_side.set("auth-codex", "token-v2-abcdef")  # e.g. a refresh done by the CLI
    assert gateway_side.get("auth-codex") == "token-v2-abcdef"
    gateway_side.set("other-key", "value-123456")
    assert cli_side.get("auth-codex") == "token-v2-abcdef"  # nothing lost either way
    assert cli_side.get("other-key") == "value-123456"
