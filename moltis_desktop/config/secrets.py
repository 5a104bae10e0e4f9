"""The secret store: the OS keyring, or an encrypted file where no keyring works.

Config refers to secrets by name (`token_secret = "gateway-token"`); only this module
holds values. Every value it reads or writes is registered with the log redactor, so it
cannot reach a log by accident. There is no plain-text fallback.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import REDACTOR
from moltis_desktop.core.paths import private_dir

_LOGGER = logging.getLogger(__name__)

KEYRING_SERVICE = "moltis-desktop"
PASSPHRASE_ENV = "MOLTIS_SECRETS_PASSPHRASE"
SECRETS_FILE_NAME = "secrets.enc"
_INDEX_FILE_NAME = "secret-names.json"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class SecretStoreError(MoltisError):
    """The secret store cannot be used; the message says how to make it work."""


class SecretBackend(Protocol):
    """Where values are kept."""

    name: str

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> bool: ...


class KeyringBackend:
    """The OS keyring (macOS Keychain, Windows Credential Locker, Secret Service on Linux)."""

    def __init__(self, keyring_module: Any) -> None:
        self._keyring = keyring_module
        self.name = f"keyring ({type(keyring_module.get_keyring()).__module__})"

    def _call(self, what: str, fn: Callable[..., Any], *args: str) -> Any:
        try:
            return fn(KEYRING_SERVICE, *args)
        except Exception as exc:  # keyring backends raise their own error types
            raise SecretStoreError(
                f"the OS keyring refused to {what}: {exc}. Unlock the keyring, or set "
                f'`secrets.backend = "file"` and {PASSPHRASE_ENV}.'
            ) from None

    def get(self, key: str) -> str | None:
        value: str | None = self._call("read a secret", self._keyring.get_password, key)
        return value

    def set(self, key: str, value: str) -> None:
        self._call("store a secret", self._keyring.set_password, key, value)

    def delete(self, key: str) -> bool:
        if self.get(key) is None:
            return False
        self._call("delete a secret", self._keyring.delete_password, key)
        return True


class EncryptedFileBackend:
    """An encrypted JSON file (Fernet: AES-128-CBC + HMAC-SHA256), mode 0600.

    The key is derived with scrypt from a passphrase taken from MOLTIS_SECRETS_PASSPHRASE
    or asked for on the terminal.
    """

    def __init__(self, path: Path, passphrase: Callable[[bool], str]) -> None:
        self.path = path
        self.name = f"encrypted file ({path})"
        self._passphrase_source = passphrase
        self._passphrase: str | None = None
        self._cache: dict[str, str] | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._fernet: Any = None
        self._salt: bytes | None = None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        # Every save is an atomic rename, so the inode alone already tells a new file.
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _open(self) -> dict[str, str]:
        # Another process (the gateway, the CLI) may have written the file since: re-read
        # it when it changed, so a refreshed OAuth token or a new key is seen at once.
        stamp = self._file_stamp()
        if self._cache is not None and stamp == self._stamp:
            return self._cache
        from cryptography.fernet import Fernet, InvalidToken

        if stamp is not None:
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                salt = base64.b64decode(doc["salt"])
                token = doc["data"].encode()
            except (OSError, ValueError, KeyError) as exc:
                raise SecretStoreError(
                    f"{self.path} is damaged ({exc}); restore it from a backup or move it away "
                    "and set the secrets again"
                ) from None
            fernet = (
                self._fernet
                if salt == self._salt
                else Fernet(self._derive(self._get_passphrase(False), salt))
            )
            try:
                values: dict[str, str] = json.loads(fernet.decrypt(token))
            except InvalidToken:
                raise SecretStoreError(
                    f"the passphrase does not open {self.path}; check {PASSPHRASE_ENV}"
                ) from None
        else:
            salt = self._salt or os.urandom(16)
            fernet = self._fernet or Fernet(self._derive(self._get_passphrase(True), salt))
            values = {}
        self._fernet, self._salt, self._cache, self._stamp = fernet, salt, values, stamp
        return values

    def _get_passphrase(self, creating: bool) -> str:
        if self._passphrase is None:
            self._passphrase = self._passphrase_source(creating)
        return self._passphrase

    @staticmethod
    def _derive(passphrase: str, salt: bytes) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
        return base64.urlsafe_b64encode(kdf.derive(passphrase.encode("utf-8")))

    def _save(self, values: dict[str, str]) -> None:
        assert self._fernet is not None
        assert self._salt is not None
        token = self._fernet.encrypt(json.dumps(values).encode()).decode()
        doc = {
            "version": 1,
            "kdf": "scrypt",
            "n": _SCRYPT_N,
            "r": _SCRYPT_R,
            "p": _SCRYPT_P,
            "salt": base64.b64encode(self._salt).decode(),
            "data": token,
        }
        atomic_write_text(self.path, json.dumps(doc) + "\n", mode=0o600)
        self._cache = values
        self._stamp = self._file_stamp()

    def _locked(self) -> Any:
        # Read-modify-write under a lock file, so that two processes never lose each
        # other's changes.
        from filelock import FileLock

        private_dir(self.path.parent)  # else the lock would make it, readable by others
        return FileLock(str(self.path) + ".lock", timeout=10)

    def get(self, key: str) -> str | None:
        return self._open().get(key)

    def set(self, key: str, value: str) -> None:
        self._open()  # fails early (no passphrase) without leaving a lock file behind
        with self._locked():
            values = dict(self._open())
            values[key] = value
            self._save(values)

    def delete(self, key: str) -> bool:
        self._open()
        with self._locked():
            values = dict(self._open())
            if key not in values:
                return False
            del values[key]
            self._save(values)
            return True


def _linux_keyring_plausible(env: Mapping[str, str]) -> bool:
    # Secret Service needs a D-Bus session; without one, importing keyring only to find
    # its "fail" backend costs ~100 ms and ~12 MB at start-up.
    return bool(env.get("DBUS_SESSION_BUS_ADDRESS"))


def _usable_keyring(env: Mapping[str, str]) -> Any | None:
    if (
        sys.platform.startswith("linux")
        and not env.get("PYTHON_KEYRING_BACKEND")
        and not _linux_keyring_plausible(env)
    ):
        return None
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
        return None
    chained = getattr(backend, "backends", None)
    if chained is not None and not chained:
        return None
    return keyring


def terminal_passphrase(creating: bool) -> str:
    """Ask for the secrets passphrase on the terminal (twice when creating the file)."""
    import getpass

    if not sys.stdin.isatty():
        raise SecretStoreError(
            "no OS keyring is available and no passphrase for the encrypted secrets file: set "
            f"{PASSPHRASE_ENV}, or run in a terminal to type one"
        )
    if creating:
        sys.stderr.write(
            "No OS keyring is available here, so Moltis keeps secrets in an encrypted file.\n"
        )
        first = getpass.getpass("Choose a passphrase for it (Enter: skip, keep no secrets): ")
        if not first:
            raise SecretStoreError(
                "no passphrase given: no secrets are kept for now (on this machine the CLI "
                "and `moltis dashboard` sign in without one)"
            )
        if first != getpass.getpass("Type it again: "):
            raise SecretStoreError("the two passphrases differ; start again")
        return first
    return getpass.getpass("Passphrase for the Moltis secrets file: ")


class SecretStore:
    """Named secrets, in the keyring or the encrypted file (chosen on first use)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        backend: str = "auto",
        env: Mapping[str, str] | None = None,
        prompt: Callable[[bool], str] | None = terminal_passphrase,
    ) -> None:
        self._state_dir = state_dir
        self._choice = backend
        self._env = os.environ if env is None else env
        self._prompt = prompt
        self._backend: SecretBackend | None = None

    def _passphrase(self, creating: bool) -> str:
        value = self._env.get(PASSPHRASE_ENV)
        if value:
            REDACTOR.add(value)
            return value
        if self._prompt is None:
            raise SecretStoreError(
                "no OS keyring is available and no passphrase for the encrypted secrets file: "
                f"set {PASSPHRASE_ENV}"
            )
        value = self._prompt(creating)
        REDACTOR.add(value)
        return value

    @property
    def backend(self) -> SecretBackend:
        """The backend in use (picked on first access)."""
        if self._backend is None:
            self._backend = self._pick()
            _LOGGER.debug("secret store: %s", self._backend.name)
        return self._backend

    def _pick(self) -> SecretBackend:
        file_backend = EncryptedFileBackend(self._state_dir / SECRETS_FILE_NAME, self._passphrase)
        if self._choice == "file":
            return file_backend
        keyring_module = _usable_keyring(self._env) if self._choice == "auto" else None
        if self._choice == "keyring":
            import keyring

            keyring_module = keyring
        if keyring_module is not None:
            return KeyringBackend(keyring_module)
        return file_backend

    @property
    def _index_path(self) -> Path:
        return self._state_dir / _INDEX_FILE_NAME

    def names(self) -> list[str]:
        """Names of the secrets stored through Moltis (values are not read)."""
        try:
            names = json.loads(self._index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return sorted(str(n) for n in names)

    def _update_index(self, add: str | None = None, remove: str | None = None) -> None:
        names = set(self.names())
        if add:
            names.add(add)
        if remove:
            names.discard(remove)
        atomic_write_text(self._index_path, json.dumps(sorted(names)) + "\n", mode=0o600)

    def get(self, name: str) -> str | None:
        """The value of `name`, or None."""
        value = self.backend.get(name)
        REDACTOR.add(value)
        return value

    def set(self, name: str, value: str) -> None:
        """Store `value` under `name`."""
        if not name or not value:
            raise SecretStoreError("a secret needs a non-empty name and value")
        REDACTOR.add(value)
        self.backend.set(name, value)
        self._update_index(add=name)

    def delete(self, name: str) -> bool:
        """Remove `name`; False when it did not exist."""
        removed = self.backend.delete(name)
        self._update_index(remove=name)
        return removed

    def get_or_create(self, name: str) -> str:
        """The value of `name`, creating a random one (URL-safe, 256 bits) when missing."""
        value = self.get(name)
        if value is None:
            value = secrets.token_urlsafe(32)
            self.set(name, value)
            _LOGGER.info("created secret %r in the %s", name, self.backend.name)
        return value
