"""The `moltis` command line: runs the gateway, and is a client of it for everything else."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from moltis_desktop import __version__
from moltis_desktop.core.errors import MoltisError


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="gateway WebSocket URL (env MOLTIS_URL; default: the local gateway from the config)",
    )
    parser.add_argument(
        "--token", help="gateway token (env MOLTIS_TOKEN; default: the secret store)"
    )
    parser.add_argument("--password", help="gateway password (env MOLTIS_PASSWORD)")
    parser.add_argument(
        "--tls-fingerprint",
        metavar="SHA256",
        help="pin the gateway's self-signed certificate for wss:// (env MOLTIS_TLS_FINGERPRINT; "
        "default for a gateway on this machine: its own certificate)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="moltis", description="Moltis Desktop: a personal AI gateway (OpenClaw-compatible)."
    )
    parser.add_argument("--version", action="version", version=f"moltis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_gateway_parser(sub)
    return parser, sub


def _add_gateway_parser(sub: Any) -> None:
    gw = sub.add_parser("gateway", help="run the gateway in the foreground (headless)")
    gw.add_argument(
        "--bind", help="address to listen on: loopback, lan, or an IP (config gateway.bind)"
    )
    gw.add_argument("--port", type=int, help="TCP port (config gateway.port; default 18789)")
    gw.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (config logging.level)",
    )


def _add_config_and_secrets_parsers(sub: Any) -> None:
    cfg = sub.add_parser("config", help="read and change the config")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    cfg_sub.required = True
    get = cfg_sub.add_parser("get", help="print the config in effect, or one key of it")
    get.add_argument("key", nargs="?", help="dotted key, e.g. gateway.port")
    _add_client_flags(get)
    set_ = cfg_sub.add_parser("set", help="set one key (validated; the gateway applies it)")
    set_.add_argument("key", help="dotted key, e.g. gateway.port")
    set_.add_argument("value", help="new value (JSON, e.g. 18790 or true or '[\"a\"]', or text)")
    _add_client_flags(set_)
    cfg_sub.add_parser("edit", help="edit the config file in $EDITOR, validated before saving")
    cfg_sub.add_parser("path", help="print the config file's path")
    val = cfg_sub.add_parser("validate", help="check a config file")
    val.add_argument("file", nargs="?", help="file to check (default: the config file)")
    val.add_argument("--json", action="store_true", help="print JSON for scripts")

    sec = sub.add_parser("secrets", help="manage secrets (keyring or encrypted file)")
    sec_sub = sec.add_subparsers(dest="secrets_command", metavar="ACTION")
    sec_sub.required = True
    sec_sub.add_parser("list", help="list the names of stored secrets")
    sget = sec_sub.add_parser("get", help="print a secret's value")
    sget.add_argument("name")
    sset = sec_sub.add_parser("set", help="store a secret (value from --value, stdin or a prompt)")
    sset.add_argument("name")
    sset.add_argument("--value", help="the value (avoid: it lands in shell history)")
    sdel = sec_sub.add_parser("delete", help="remove a secret")
    sdel.add_argument("name")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. (`moltis gateway` alone parses with `_parser()`: the other
    commands' modules are not loaded into a gateway that never uses them.)"""
    from moltis_desktop.cli.auth import add_auth_parser
    from moltis_desktop.cli.chat import add_chat_parsers
    from moltis_desktop.cli.devices import add_devices_parser
    from moltis_desktop.cli.discover import add_discover_parser
    from moltis_desktop.cli.models import add_models_parser
    from moltis_desktop.cli.node import add_node_parser
    from moltis_desktop.cli.onboard import add_onboard_parser
    from moltis_desktop.cli.plugins import add_plugins_parser
    from moltis_desktop.cli.qr import add_qr_parser
    from moltis_desktop.cli.voice import add_voice_parser

    parser, sub = _parser()
    for name, text in (
        ("health", "show the gateway's health"),
        ("status", "show a summary of the gateway"),
    ):
        cmd = sub.add_parser(name, help=text)
        _add_client_flags(cmd)
        if name == "health":
            cmd.add_argument("--probe", action="store_true", help="rebuild the snapshot now")

    call = sub.add_parser("call", help="call any gateway method")
    call.add_argument("method", help="method name, e.g. health or config.get")
    call.add_argument("--params", default=None, help="params as JSON (default none)")
    _add_client_flags(call)

    dash = sub.add_parser(
        "dashboard", help="open the web app in a browser, signed in (a one-time link)"
    )
    dash.add_argument(
        "--no-open", action="store_true", help="only print the link; do not open a browser"
    )
    _add_client_flags(dash)

    _add_config_and_secrets_parsers(sub)
    add_devices_parser(sub, _add_client_flags)
    add_chat_parsers(sub, _add_client_flags)
    # models after chat's: it adds `voice` under chat's `models` command.
    for add_parser in (
        add_auth_parser, add_onboard_parser, add_discover_parser, add_qr_parser,
        add_node_parser, add_models_parser, add_plugins_parser,
    ):  # fmt: skip
        add_parser(sub)
    add_voice_parser(sub, _add_client_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `moltis` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    gateway_only = bool(argv) and argv[0] == "gateway"
    args = (_parser()[0] if gateway_only else build_parser()).parse_args(argv)
    try:
        if args.command == "gateway":
            from moltis_desktop.runtime import run_headless

            return run_headless(overrides=gateway_overrides(args))
        if args.command == "devices":
            from moltis_desktop.cli.devices import cmd_devices

            return cmd_devices(args)
        if args.command == "node":
            from moltis_desktop.cli.node import cmd_node

            return cmd_node(args)
        if args.command == "voice":
            from moltis_desktop.cli.voice import cmd_voice

            return cmd_voice(args)
        if args.command == "qr":
            from moltis_desktop.cli.qr import cmd_qr

            return cmd_qr(args)
        from moltis_desktop.cli.models import is_models_store

        if is_models_store(args):
            from moltis_desktop.cli.models import cmd_models

            return cmd_models(args)
        if args.command == "discover":
            from moltis_desktop.cli.discover import cmd_discover

            return cmd_discover(args)
        if args.command == "onboard":
            from moltis_desktop.cli.onboard import cmd_onboard

            return cmd_onboard(args)
        if args.command == "plugins":
            from moltis_desktop.cli.plugins import cmd_plugins

            return cmd_plugins(args)
        if args.command == "auth":
            from moltis_desktop.cli.auth import cmd_auth

            return cmd_auth(args)
        from moltis_desktop.cli import chat, config_cmd, secrets_cmd, status

        modules = (chat, status, config_cmd, secrets_cmd)
        module = next(m for m in modules if hasattr(m, f"cmd_{args.command}"))
        handler = getattr(module, f"cmd_{args.command}")
        return int(handler(args))
    except MoltisError as exc:
        print(f"moltis: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def gateway_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as config overrides (they win over file and environment)."""
    out: dict[str, Any] = {}
    if args.bind is not None:
        out.setdefault("gateway", {})["bind"] = args.bind
    if args.port is not None:
        out.setdefault("gateway", {})["port"] = args.port
    if args.log_level is not None:
        out["logging"] = {"level": args.log_level}
    return out
