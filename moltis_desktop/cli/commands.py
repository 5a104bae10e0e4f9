"""The `moltis` subcommands other than `gateway`."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moltis_desktop.cli.client import GatewayClient, GatewayUnreachableError
from moltis_desktop.cli.connect import (
    call,
    client_for,
    credentials,
    gateway_url,
    local_config,
    secret_store,
    tls_fingerprint,
)
from moltis_desktop.cli.output import print_json, run
from moltis_desktop.config.loader import ConfigError, set_dotted
from moltis_desktop.config.store import ConfigStore, text_hash
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.paths import AppPaths
from moltis_desktop.protocol.constants import Scope

# ---------------------------------------------------------------- health / status / call


def _duration(ms: int) -> str:
    seconds = ms // 1000
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def _config_line(config: dict[str, Any]) -> str:
    if config.get("valid", True):
        return f"{config.get('path')} (valid)"
    return (
        f"{config.get('path')} is BROKEN, running on the {config.get('source')} config: "
        f"{config.get('error')}"
    )


def cmd_health(args: argparse.Namespace) -> int:
    params = {"probe": True} if args.probe else None
    health = run(call(args, "health", params, [Scope.READ]))
    if args.json:
        print_json(health)
        return 0
    loop = health.get("eventLoop", {})
    print(f"Gateway: {'ok' if health.get('ok') else 'NOT OK'}")
    if "config" in health:
        print(f"Config: {_config_line(health['config'])}")
    agents = ", ".join(
        a["agentId"] + (" (default)" if a.get("isDefault") else "")
        for a in health.get("agents", [])
    )
    print(f"Agents: {agents or 'none'}")
    channels = health.get("channelOrder") or []
    print(f"Channels: {', '.join(channels) if channels else 'none configured'}")
    print(f"Sessions: {health.get('sessions', {}).get('count', 0)}")
    print(
        f"Event loop: p99 delay {loop.get('delayP99Ms', 0)} ms, "
        f"utilization {100 * float(loop.get('utilization', 0)):.1f}%"
        f"{'  DEGRADED' if loop.get('degraded') else ''}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = run(call(args, "status", {}, [Scope.READ]))
    if args.json:
        print_json(status)
        return 0
    gw = status.get("gateway", {})
    mem = status.get("processMemory", {}).get("rssBytes", 0) / 1024 / 1024
    print(
        f"Moltis gateway {status.get('runtimeVersion')} at {gw.get('url')} "
        f"(pid {status.get('pid')}, up {_duration(int(gw.get('uptimeMs', 0)))})"
    )
    print(
        f"Auth: {gw.get('authMode')}   Connections: {gw.get('connections')}   Memory: {mem:.1f} MiB"
    )
    print(f"Config: {_config_line(status.get('config', {}))}")
    hb = status.get("heartbeat", {})
    print(
        f"Agents: {', '.join(a['agentId'] for a in hb.get('agents', []))} "
        f"(default {hb.get('defaultAgentId')})"
    )
    print(
        f"Sessions: {status.get('sessions', {}).get('count', 0)}   "
        f"Queued system events: {len(status.get('queuedSystemEvents', []))}"
    )
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    try:
        params = None if args.params is None else json.loads(args.params)
    except ValueError as exc:
        raise MoltisError(f"--params is not valid JSON: {exc}") from None
    result = run(call(args, args.method, params, [Scope.ADMIN]))
    print_json(result)
    return 0


# ---------------------------------------------------------------- dashboard


def _http_base(url: str) -> str:
    """The gateway's HTTP origin for its WebSocket URL (`ws://host:port` → `http://host:port`)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise MoltisError(f"--url / MOLTIS_URL must be a ws:// or http:// address, not {url!r}")
    return f"{scheme}://{parts.netloc}"


async def _mint_ticket(
    base: str, secret: str | None, timeout_s: float, tls_fingerprint: str | None = None
) -> tuple[int, Any]:
    """`POST /ui/ticket` with the credential as a bearer token: (status, JSON body or None)."""
    import aiohttp

    from moltis_desktop.cli.client import tls_failure, tls_for

    pin = tls_for(base, tls_fingerprint)

    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(
                f"{base}/ui/ticket", headers=headers, ssl=pin if pin is not None else True
            ) as res,
        ):
            try:
                body = await res.json(content_type=None)
            except ValueError:
                body = None
            return res.status, body
    except TimeoutError:
        raise MoltisError(f"the gateway at {base} did not answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        tls_error = tls_failure(base, exc)
        if tls_error is not None:
            raise tls_error from None
        raise GatewayUnreachableError(
            f"cannot reach the gateway at {base} ({exc}). Is it running? Start it with "
            "`moltis gateway`, or point --url / MOLTIS_URL at it."
        ) from None


def _refused(base: str, token: str | None, password: str | None, from_store: bool) -> str:
    """What to say when the gateway answers 401 to the ticket request."""
    if from_store and (token or password):
        what = "token" if token else "password"
        return (
            f"the gateway at {base} refused the {what} in the secret store: it does not match "
            "the running gateway's (was the gateway started with MOLTIS_TOKEN / "
            "MOLTIS_PASSWORD, or with another MOLTIS_HOME?). Pass the gateway's own with "
            "--token / MOLTIS_TOKEN (or --password / MOLTIS_PASSWORD)."
        )
    if from_store:
        return (
            f"the gateway at {base} needs its token, and the secret store holds none: pass it "
            "with --token / MOLTIS_TOKEN (or --password / MOLTIS_PASSWORD)."
        )
    if token or password:
        what = "token" if token else "password"
        return (
            f"the gateway at {base} refused the {what} given with --{what} / MOLTIS_{what.upper()}."
        )
    return (
        f"the gateway at {base} needs its token: pass it with --token / MOLTIS_TOKEN "
        "(or --password / MOLTIS_PASSWORD)."
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Open the web app signed in, through a one-time ticket (the credential stays out of
    the address bar and the browser history)."""
    store = local_config()
    url = gateway_url(args, store)
    base = _http_base(url)
    token, password, from_store = credentials(args, store, url)
    status, body = run(
        _mint_ticket(base, token or password, args.timeout, tls_fingerprint(args, url))
    )
    if status == 401:
        raise MoltisError(_refused(base, token, password, from_store))
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("url"), str):
        if status in (404, 405):
            raise MoltisError(
                f"the gateway at {base} does not serve the web app (is it an older Moltis, or "
                "another gateway?)"
            )
        detail = body.get("error") if isinstance(body, dict) else None
        raise MoltisError(
            f"the gateway at {base} answered {status} to POST /ui/ticket"
            + (f": {detail}" if detail else "")
        )
    link = str(body["url"])
    if args.json:
        print_json(body)
    else:
        print(link)
    if args.no_open:
        print("the link signs in once, within a minute", file=sys.stderr)
        return 0
    from moltis_desktop.providers.oauth_flows import system_browser

    if run(system_browser(link)):
        print("opened in your browser (the link signs in once, within a minute)", file=sys.stderr)
    else:
        print(
            "could not open a browser here: open the link above yourself, within a minute",
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------- config


def _value_at(tree: Any, key: str | None) -> Any:
    if not key:
        return tree
    node = tree
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise MoltisError(f"no config key {key!r}; see `moltis config get` for the keys")
    return node


def _print_value(value: Any, as_json: bool) -> None:
    if as_json or isinstance(value, dict | list):
        print_json(value)
    elif isinstance(value, bool):
        print("true" if value else "false")
    else:
        print(value)


def _offline_note(exc: GatewayUnreachableError) -> None:
    print(f"note: {exc.message.split(' (')[0]}; using the config file directly", file=sys.stderr)


def cmd_config(args: argparse.Namespace) -> int:
    action = args.config_command
    if action == "path":
        path = AppPaths.resolve().config_file
        print(path)
        return 0
    if action == "validate":
        return _config_validate(args)
    if action == "edit":
        return _config_edit()
    if action == "get":
        try:
            snapshot = run(call(args, "config.get", {}, [Scope.READ]))
            effective = snapshot["config"]
        except GatewayUnreachableError as exc:
            _offline_note(exc)
            store = local_config()
            if store.error is not None:
                print(f"warning: {store.error}", file=sys.stderr)
            effective = store.current.effective
        _print_value(_value_at(effective, args.key), args.json)
        return 0
    if action == "set":
        return _config_set(args)
    raise MoltisError(f"unknown config action {action!r}")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def patch_config(client: GatewayClient, patch: dict[str, Any], **extra: Any) -> Any:
    """Merge `patch` into the running gateway's config (`config.get` for the base hash,
    then `config.patch`); `extra` are more `config.patch` params (e.g. restartDelayMs)."""
    current = await client.call("config.get", {})
    return await client.call(
        "config.patch", {"raw": json.dumps(patch), "baseHash": current["hash"], **extra}
    )


def _config_set(args: argparse.Namespace) -> int:
    patch: dict[str, Any] = {}
    set_dotted(patch, args.key, _parse_value(args.value))

    async def online() -> Any:
        async with client_for(args, [Scope.ADMIN]) as client:
            return await patch_config(client, patch)

    try:
        result = run(online())
        where = "the gateway applied it"
    except GatewayUnreachableError as exc:
        _offline_note(exc)
        store = ConfigStore(AppPaths.resolve().config_file)
        try:
            store.patch(
                patch,
                text_hash(store.path.read_text(encoding="utf-8")) if store.path.exists() else None,
            )
        except ConfigError as err:
            raise MoltisError(f"not saved: {err}") from None
        result = {"path": str(store.path)}
        where = "saved to the file"
    if args.json:
        print_json(result)
    else:
        print(f"{args.key} = {json.dumps(_parse_value(args.value))} ({where})")
        restart = result.get("restart") if isinstance(result, dict) else None
        if restart:
            print(
                f"the gateway moves its listener in {restart['delayMs']} ms "
                f"({', '.join(restart['keys'])})"
            )
    return 0


def _config_validate(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else AppPaths.resolve().config_file
    store = ConfigStore(path, read_only=True)
    ok = store.error is None
    if args.json:
        print_json(
            {
                "path": str(path),
                "valid": ok,
                "exists": path.exists(),
                "error": None if ok else str(store.error),
                "key": None if ok else store.error.key if store.error else None,
                "warnings": list(store.current.warnings),
            }
        )
        return 0 if ok else 1
    if not ok:
        print(f"invalid: {store.error}")
        return 1
    for warning in store.current.warnings:
        print(f"warning: {warning}")
    print(f"{path}: valid" + ("" if path.exists() else " (does not exist: defaults apply)"))
    return 0


def _editor() -> list[str]:
    for name in ("VISUAL", "EDITOR"):
        value = os.environ.get(name)
        if value:
            return shlex.split(value)
    for candidate in ("nano", "vi", "notepad"):
        from shutil import which

        if which(candidate):
            return [candidate]
    raise MoltisError("no editor found: set $EDITOR (e.g. `export EDITOR=nano`)")


def _config_edit() -> int:
    store = ConfigStore(AppPaths.resolve().config_file)
    path = store.path
    original = path.read_text(encoding="utf-8") if path.exists() else _starter_config()
    base = text_hash(path.read_text(encoding="utf-8")) if path.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / path.name
        draft.write_text(original, encoding="utf-8")
        while True:
            subprocess.run([*_editor(), str(draft)], check=False)  # noqa: S603
            text = draft.read_text(encoding="utf-8")
            if text == original:
                print("no changes")
                return 0
            try:
                store.write_raw(text, base)
            except ConfigError as exc:
                print(f"not saved: {exc}", file=sys.stderr)
                if not sys.stdin.isatty() or input("edit again? [Y/n] ").strip().lower() in (
                    "n",
                    "no",
                ):
                    return 1
                continue
            print(f"saved {path} (a running gateway applies it within a second)")
            return 0


def _starter_config() -> str:
    return (
        "# Moltis Desktop configuration. Every key is optional; see `moltis config get`\n"
        "# for the values in effect and docs/CONFIG in the README for what each means.\n\n"
        '[gateway]\n# bind = "loopback"\n# port = 18789\n\n'
        '[logging]\n# level = "info"\n'
    )


# ---------------------------------------------------------------- secrets


def cmd_secrets(args: argparse.Namespace) -> int:
    store = secret_store(local_config())
    action = args.secrets_command
    if action == "list":
        names = store.names()
        print("\n".join(names) if names else "(no secrets stored)")
        print(f"backend: {store.backend.name}", file=sys.stderr)
        return 0
    if action == "get":
        value = store.get(args.name)
        if value is None:
            raise MoltisError(f"no secret named {args.name!r} (see `moltis secrets list`)")
        print(value)
        return 0
    if action == "set":
        value = args.value
        if value is None:
            value = (
                getpass.getpass(f"Value for {args.name}: ")
                if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\n")
            )
        store.set(args.name, value)
        print(f"stored {args.name!r} in the {store.backend.name}")
        return 0
    if action == "delete":
        removed = store.delete(args.name)
        print(f"deleted {args.name!r}" if removed else f"no secret named {args.name!r}")
        return 0 if removed else 1
    raise MoltisError(f"unknown secrets action {action!r}")
