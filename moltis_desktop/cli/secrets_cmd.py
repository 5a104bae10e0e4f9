"""`moltis secrets list/get/set/delete`: the secret store (keyring or encrypted file)."""

from __future__ import annotations

import argparse
import getpass
import sys

from moltis_desktop.cli.connect import local_config, secret_store
from moltis_desktop.core.errors import MoltisError


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
