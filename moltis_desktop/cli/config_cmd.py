"""`moltis config get/set/edit/path/validate`: read and change the config, through the
running gateway when it answers, else in the file itself."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from moltis_desktop.cli.client import GatewayClient, GatewayUnreachableError
from moltis_desktop.cli.connect import call, client_for, local_config
from moltis_desktop.cli.output import print_json, run
from moltis_desktop.config.loader import ConfigError, set_dotted
from moltis_desktop.config.store import ConfigStore, text_hash
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.paths import AppPaths
from moltis_desktop.protocol.constants import Scope


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
