"""`moltis node`: run this machine as a node of a gateway, and show what it is paired with."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.cli.output import print_json
from moltis_desktop.core.errors import MoltisError

if TYPE_CHECKING:
    from moltis_desktop.node.client import NodeClient


def add_node_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = subparsers.add_parser(
        "node", help="run this machine as a node of a gateway (it runs the gateway's commands)"
    )
    sub = node.add_subparsers(dest="node_command", metavar="ACTION")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="connect to the gateway and answer its commands until Ctrl-C",
        description="Connect to a gateway as a node. The first time, pair with a setup code "
        "(--pair) or the gateway's token (--url and --token); later runs reconnect with the "
        "node's own token.",
    )
    run.add_argument(
        "--pair",
        metavar="CODE",
        help="setup code or oc-pair:// link (from Pair a Phone in the tray or the web app)",
    )
    run.add_argument("--url", help="gateway WebSocket URL, e.g. ws://127.0.0.1:18789")
    run.add_argument("--token", help="the gateway's shared token, with --url (env MOLTIS_TOKEN)")
    run.add_argument("--name", help="the name the gateway shows for this node (default: hostname)")
    run.add_argument("--state-dir", type=Path, help="where the node keeps its key and tokens")
    run.add_argument(
        "--allow-run",
        action="store_true",
        help="let the gateway run programs on this machine (system.run)",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="connect (waiting for approval if needed), report, and exit: a connection check",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log what the node does")
    status = sub.add_parser("status", help="show the node's id and the gateway it is paired with")
    status.add_argument("--state-dir", type=Path, help="where the node keeps its key and tokens")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")


def default_state_dir() -> Path:
    """`<state dir>/node` (the platform's state directory, or `$MOLTIS_HOME/state`)."""
    from moltis_desktop.core.paths import AppPaths

    return AppPaths.resolve().state_dir / "node"


def cmd_node(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or default_state_dir()
    if args.node_command == "status":
        return _status(state_dir, args.json)
    return _run(state_dir, args)


def _say(line: str) -> None:
    print(line, flush=True)


def _run(state_dir: Path, args: argparse.Namespace) -> int:
    from moltis_desktop.core.logging import configure_logging
    from moltis_desktop.node.client import NodeClient

    if args.pair and (args.url or args.token):
        raise MoltisError("use either --pair CODE or --url URL --token TOKEN, not both")
    token = args.token or (os.environ.get("MOLTIS_TOKEN") if args.url else None)
    configure_logging(level="info" if args.verbose else "warning", console=sys.stderr)
    client = NodeClient(
        state_dir,
        setup_code=args.pair,
        url=args.url,
        token=token or None,
        display_name=args.name,
        allow_run=args.allow_run,
        say=_say,
    )
    return asyncio.run(_main(client, once=args.once))


async def _main(client: NodeClient, *, once: bool) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows: there Ctrl-C is a KeyboardInterrupt, handled by `moltis`'s main.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, client.stop)
    _say(f"node {client.node_id[:12]} starting (state in {client.state_dir})")
    if not client.commands.allow_run:
        _say("system.run is off (start with --allow-run to let the gateway run programs here)")
    await client.run(once=once)
    if not once:
        _say("node stopped")
    return 0


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def _status(state_dir: Path, as_json: bool) -> int:
    from moltis_desktop.node.identity import IDENTITY_FILE, TOKENS_FILE, NodeTokens

    identity_path = state_dir / IDENTITY_FILE
    node_id = ""
    if identity_path.exists():
        try:
            node_id = str(json.loads(identity_path.read_text(encoding="utf-8"))["deviceId"])
        except (OSError, ValueError, KeyError, TypeError):
            raise MoltisError(
                f"the node identity {identity_path} is damaged; delete it to make a new one "
                "(the node then has to be paired again)"
            ) from None
    tokens = NodeTokens(state_dir / TOKENS_FILE)
    roles: dict[str, dict[str, Any]] = {
        role: {"scopes": list(t.scopes), "issuedAtMs": t.issued_at_ms}
        for role, t in sorted(tokens.tokens.items())
    }
    if as_json:
        print_json(
            {
                "stateDir": str(state_dir),
                "nodeId": node_id or None,
                "gatewayUrl": tokens.gateway_url or None,
                "urls": tokens.urls,
                "tlsSha256": tokens.tls_sha256 or None,
                "roles": roles,
            }
        )
        return 0
    print(f"State:    {state_dir}")
    print(f"Node id:  {node_id or 'none yet (made on the first `moltis node run`)'}")
    print(f"Gateway:  {tokens.gateway_url or 'not paired yet (moltis node run --pair CODE)'}")
    others = [u for u in tokens.urls if u != tokens.gateway_url]
    if others:
        print(f"Also at:  {', '.join(others)}")
    if tokens.tls_sha256:
        print(f"TLS pin:  sha256 {tokens.tls_sha256}")
    if not roles:
        print("Tokens:   none")
    for role, info in roles.items():
        scopes = ", ".join(info["scopes"]) or "no scopes"
        print(f"Token:    {role} ({scopes}; issued {_when(info['issuedAtMs'])})")
    return 0
