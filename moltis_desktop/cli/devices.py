"""`moltis devices`: the devices that asked to pair or are paired, and their tokens."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable
from typing import Any

from moltis_desktop.cli.output import print_json, run
from moltis_desktop.protocol.constants import Scope

_SCOPES = [Scope.ADMIN, Scope.PAIRING]


def add_devices_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    client_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    dev = subparsers.add_parser("devices", help="pair devices (phones, node hosts) and manage them")
    sub = dev.add_subparsers(dest="devices_command", metavar="ACTION")
    sub.required = True
    client_flags(sub.add_parser("list", help="pending requests and paired devices"))
    for name, what in (("approve", "pair the device of a request"), ("reject", "refuse it")):
        p = sub.add_parser(name, help=what)
        p.add_argument("request_id")
        client_flags(p)
    p = sub.add_parser("remove", help="unpair a device (its connections close)")
    p.add_argument("device_id")
    client_flags(p)
    for name, what in (("rotate", "issue a new token"), ("revoke", "revoke its token")):
        p = sub.add_parser(name, help=f"{what} for a device's role")
        p.add_argument("device_id")
        p.add_argument("--role", default="operator", help="operator or node (default operator)")
        client_flags(p)


def _when(ms: Any) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(int(ms) / 1000).strftime("%Y-%m-%d %H:%M")


def cmd_devices(args: argparse.Namespace) -> int:
    from moltis_desktop.cli.connect import call

    action = args.devices_command
    if action == "list":
        result = run(call(args, "device.pair.list", {}, _SCOPES))
        if args.json:
            print_json(result)
            return 0
        pending, paired = result["pending"], result["paired"]
        print(f"Pending ({len(pending)}):" if pending else "No pending requests.")
        for r in pending:
            print(
                f"  {r['requestId']}  {r.get('displayName') or r['deviceId'][:12]}  as "
                f"{r.get('role')}  from {r.get('remoteIp', '?')}  {_when(r.get('ts'))}"
            )
        print(f"Paired ({len(paired)}):" if paired else "No paired devices.")
        for d in paired:
            roles = ",".join(d.get("roles", []))
            print(
                f"  {d['deviceId'][:16]}  {d.get('displayName') or '-'}  {d.get('platform') or ''}"
                f"  roles {roles}  approved {_when(d.get('approvedAtMs'))}"
            )
        return 0
    if action in ("approve", "reject"):
        result = run(call(args, f"device.pair.{action}", {"requestId": args.request_id}, _SCOPES))
        verb = "paired" if action == "approve" else "refused"
        print_json(result) if args.json else print(f"{args.request_id}: {verb}")
        return 0
    if action == "remove":
        result = run(call(args, "device.pair.remove", {"deviceId": args.device_id}, _SCOPES))
        print_json(result) if args.json else print(f"{args.device_id}: removed")
        return 0
    params = {"deviceId": args.device_id, "role": args.role}
    result = run(call(args, f"device.token.{action}", params, _SCOPES))
    if args.json:
        print_json(result)
    elif action == "rotate":
        print(f"new {args.role} token for {args.device_id[:16]}: {result['token']}")
        print("give it to the device; the old one no longer works")
    else:
        print(f"{args.device_id}: {args.role} token revoked")
    return 0
