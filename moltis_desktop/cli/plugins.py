"""`moltis plugins list`: the plugins this installation loads (the built-ins and those
installed under the `moltis_desktop.plugins` entry point), what each registered, and the
ones that failed. It loads them here, as the gateway does; no gateway is needed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from moltis_desktop.cli.output import print_json


def add_plugins_parser(sub: Any) -> None:
    plugins = sub.add_parser("plugins", help="list the plugins and what each one registered")
    plugins_sub = plugins.add_subparsers(dest="plugins_command", metavar="ACTION")
    plugins_sub.required = True
    listing = plugins_sub.add_parser(
        "list", help="the plugins loaded, their providers and tools, and those that failed"
    )
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")


def cmd_plugins(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    from moltis_desktop.plugins.manager import load

    loaded = load()
    report = loaded.report
    by_plugin: dict[str, list[dict[str, str]]] = {name: [] for name in report.names}
    for plugin, kind, name in report.provided:
        by_plugin.setdefault(plugin, []).append({"kind": kind, "name": name})
    if args.json:
        plugins = [{"name": name, "provided": items} for name, items in by_plugin.items()]
        print_json({"plugins": plugins, "errors": report.errors})
        return 1 if report.errors else 0
    for name, items in by_plugin.items():
        out(name)
        for item in items or [{"kind": "", "name": "(nothing registered)"}]:
            tool = loaded.tools.get(item["name"]) if item["kind"] == "tool" else None
            needs = ", ".join(key.name for key in tool.requires) if tool else ""
            note = f"needs {needs}" if needs else ""
            line = f"  {item['kind']:<9} {item['name']}"
            out(f"{line}  ({note})" if note else line)
    for error in report.errors:
        out(f"FAILED {error['id']} ({error['origin']}): {error['error']}")
    return 1 if report.errors else 0
