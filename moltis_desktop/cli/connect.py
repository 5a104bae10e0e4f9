"""How the `moltis` CLI reaches the gateway: its URL, TLS pin and credentials (flags, else
the environment, else the local config and secret store), and a client for it.

With no address and no credential given (no --url, --token or --password, and none of
MOLTIS_URL, MOLTIS_TOKEN, MOLTIS_PASSWORD), the CLI goes through the local gateway's owner
socket when one answers: the gateway asks the kernel which user is calling, so no token is
read or needed (a machine with no keyring and no passphrase works the same). Otherwise it
connects as before, to the URL with the credential."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moltis_desktop.cli.client import GatewayClient
from moltis_desktop.config.secrets import SecretStore, SecretStoreError
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.paths import AppPaths, gateway_socket_path
from moltis_desktop.gateway.auth import is_loopback


def local_config() -> ConfigStore:
    """This machine's config file, read only."""
    return ConfigStore(AppPaths.resolve().config_file, read_only=True)


def secret_store(store: ConfigStore) -> SecretStore:
    """The secret store the config names (the same one the local gateway uses)."""
    return SecretStore(AppPaths.resolve().state_dir, backend=store.current.settings.secrets.backend)


def gateway_url(args: argparse.Namespace, store: ConfigStore) -> str:
    """The gateway's WebSocket URL: `--url`, else MOLTIS_URL, else the local gateway's."""
    url = getattr(args, "url", None) or os.environ.get("MOLTIS_URL")
    if url:
        return str(url)
    gw = store.current.settings.gateway
    host = "127.0.0.1" if gw.bind in ("loopback", "lan", "0.0.0.0") else gw.bind  # noqa: S104
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'wss' if gw.tls.enabled else 'ws'}://{host}:{gw.port}"


def _explicit(args: argparse.Namespace) -> bool:
    """An address or a credential was given (flags or environment)."""
    given = (getattr(args, name, None) for name in ("url", "token", "password"))
    env = (os.environ.get(name) for name in ("MOLTIS_URL", "MOLTIS_TOKEN", "MOLTIS_PASSWORD"))
    return any(given) or any(env)


def socket_path() -> Path | None:
    """Where this user's local gateway has its owner socket (None on Windows)."""
    return gateway_socket_path(AppPaths.resolve())


def owner_socket(args: argparse.Namespace) -> Path | None:
    """The local gateway's owner socket, when nothing else was asked for and a gateway
    answers on it (a socket file left by a killed gateway refuses, and is passed over)."""
    if _explicit(args):
        return None
    path = socket_path()
    return path if path is not None and _answers(path) else None


def not_signed_in(url: str, exc: SecretStoreError) -> MoltisError:
    """The secret store cannot give the token for `url`: say what would work."""
    path = socket_path()
    reading = f"the token cannot be read here: {exc} (or pass --token / MOLTIS_TOKEN)"
    if path is not None and _answers(path):
        return MoltisError(
            f"cannot sign in to the gateway at {url}: {reading}. The local gateway answers "
            f"on {path}: without --url / MOLTIS_URL, `moltis` goes through it with no token"
        )
    where = f"nothing answers on {path}" if path is not None else "no owner socket on Windows"
    return MoltisError(
        f"cannot sign in to the gateway at {url}: {where} (is the app running? start it with "
        f"`make run` or `moltis-desktop`), and {reading}"
    )


def _answers(path: Path) -> bool:
    from moltis_desktop.gateway.owner_socket import socket_answers

    try:
        return stat.S_ISSOCK(os.stat(path).st_mode) and socket_answers(path)
    except OSError:
        return False


def _is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or is_loopback(host)


def tls_fingerprint(args: argparse.Namespace, url: str) -> str | None:
    """The certificate pin for a `wss://` URL: the flag, else the environment, else (for a
    gateway on this machine) the fingerprint of the certificate in the state directory."""
    pin = getattr(args, "tls_fingerprint", None) or os.environ.get("MOLTIS_TLS_FINGERPRINT")
    if pin or not url.lower().startswith(("wss://", "https://")):
        return str(pin) if pin else None
    if _is_local(url):
        from moltis_desktop.gateway.tls import read_fingerprint

        return read_fingerprint(AppPaths.resolve().state_dir)
    return None


def credentials(
    args: argparse.Namespace, store: ConfigStore, url: str
) -> tuple[str | None, str | None, bool]:
    """(token, password, whether they came from the secret store) for the gateway at `url`:
    the flags, else the environment, else (for a local gateway) the secret store."""
    token = getattr(args, "token", None) or os.environ.get("MOLTIS_TOKEN")
    password = getattr(args, "password", None) or os.environ.get("MOLTIS_PASSWORD")
    if not token and not password and _is_local(url):
        # The local gateway's own secret, read from the same secret store it uses.
        auth = store.current.settings.gateway.auth
        secrets = secret_store(store)
        try:
            if auth.mode == "token":
                token = secrets.get(auth.token_secret)
            elif auth.mode == "password":
                password = secrets.get(auth.password_secret)
        except SecretStoreError as exc:
            raise not_signed_in(url, exc) from None
        return token, password, True
    return token, password, False


def client_for(args: argparse.Namespace, scopes: list[str]) -> GatewayClient:
    """A client for the gateway the flags / environment / config point at: over the owner
    socket when nothing was given and the local gateway answers there."""
    timeout_s = getattr(args, "timeout", 30.0)
    path = owner_socket(args)
    if path is not None:
        return GatewayClient("", unix_socket=path, scopes=scopes, timeout_s=timeout_s)
    store = local_config()
    url = gateway_url(args, store)
    token, password, _ = credentials(args, store, url)
    return GatewayClient(
        url,
        token=token,
        password=password,
        scopes=scopes,
        timeout_s=timeout_s,
        tls_fingerprint=tls_fingerprint(args, url),
    )


async def call(args: argparse.Namespace, method: str, params: Any, scopes: list[str]) -> Any:
    """Call one gateway method with a client made by `client_for`, and return its result."""
    async with client_for(args, scopes) as client:
        return await client.call(method, params)
