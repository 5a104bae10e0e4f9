"""`moltis health`, `moltis status`, `moltis call` and `moltis dashboard`: what the running
gateway says about itself, any method of it, and its web app signed in."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moltis_desktop.cli.client import START_HINT, GatewayUnreachableError
from moltis_desktop.cli.connect import (
    call,
    credentials,
    gateway_url,
    local_config,
    owner_socket,
    tls_fingerprint,
)
from moltis_desktop.cli.output import print_json, run
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.protocol.constants import Scope


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


def _error_message(body: Any) -> str | None:
    """The message of the gateway's JSON error (`{"error": {"message": …}}`)."""
    problem = body.get("error") if isinstance(body, dict) else None
    if isinstance(problem, dict):
        problem = problem.get("message")
    return str(problem) if problem else None


async def _mint_ticket(
    base: str,
    secret: str | None,
    timeout_s: float,
    tls_fingerprint: str | None = None,
    unix_socket: Path | None = None,
) -> tuple[int, Any]:
    """`POST /ui/ticket` with the credential as a bearer token, or, over the owner socket,
    `POST /api/local/sign-in` with none: (status, JSON body or None)."""
    import aiohttp

    from moltis_desktop.cli.client import http_session, tls_failure, tls_for

    pin = tls_for(base, tls_fingerprint)
    where = f"unix:{unix_socket}" if unix_socket else base
    url = "http://localhost/api/local/sign-in" if unix_socket else f"{base}/ui/ticket"
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            http_session(unix_socket, timeout) as http,
            http.post(url, headers=headers, ssl=pin if pin is not None else True) as res,
        ):
            try:
                body = await res.json(content_type=None)
            except ValueError:
                body = None
            return res.status, body
    except TimeoutError:
        raise MoltisError(f"the gateway at {where} did not answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        tls_error = tls_failure(base, exc)
        if tls_error is not None:
            raise tls_error from None
        raise GatewayUnreachableError(
            f"cannot reach the gateway at {where} ({exc}). {START_HINT}"
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
    path = owner_socket(args)
    if path is not None:
        # This user's own gateway: a link for the asking, no credential involved.
        status, body = run(_mint_ticket("http://localhost", None, args.timeout, None, path))
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("url"), str):
            detail = _error_message(body)
            raise MoltisError(
                f"the gateway on {path} answered {status} to POST /api/local/sign-in"
                + (f": {detail}" if detail else "")
            )
        return _show_link(args, body)
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
        detail = _error_message(body)
        raise MoltisError(
            f"the gateway at {base} answered {status} to POST /ui/ticket"
            + (f": {detail}" if detail else "")
        )
    return _show_link(args, body)


def _show_link(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """Print the sign-in link (and open it, unless --no-open)."""
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
