"""`moltis health`, `moltis status`, `moltis call` and `moltis dashboard`: what the running
gateway says about itself, any method of it, and its web app signed in."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from moltis_desktop.cli.client import GatewayUnreachableError
from moltis_desktop.cli.connect import call, credentials, gateway_url, local_config, tls_fingerprint
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
        detail = _error_message(body)
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
