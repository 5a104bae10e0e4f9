"""`moltis qr`: a setup code (and its QR) for pairing a phone with this gateway.

The code carries a short-lived, single-purpose bootstrap token (that is its point); no
other credential is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import time
from typing import Any

from moltis_desktop.cli.client import GatewayRequestError, GatewayUnreachableError
from moltis_desktop.cli.output import print_json, run
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.protocol.constants import Scope

PROFILES = ("full", "limited", "node", "voice-node")
_SCOPES = [Scope.ADMIN]
REBIND_WAIT_S = 10.0
"""How long `--lan` waits for the gateway to move its listener."""
_REBIND_DELAY_MS = 200


def add_qr_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    qr = subparsers.add_parser(
        "qr", help="show a setup code and QR code to pair a phone with this gateway"
    )
    qr.add_argument(
        "--profile",
        choices=PROFILES,
        default="full",
        help="access the code grants (default full; limited over plain ws:// on the network)",
    )
    qr.add_argument(
        "--url",
        metavar="PUBLIC_URL",
        help="the ws:// or wss:// address the phone should use (default: this computer's "
        "network addresses)",
    )
    qr.add_argument(
        "--lan",
        action="store_true",
        help='if the gateway listens on this computer only, set gateway.bind = "lan" first '
        "(auth stays on)",
    )
    qr.add_argument("--json", action="store_true", help="print JSON for scripts (no QR)")
    qr.add_argument("--no-ascii", action="store_true", help="do not draw the QR code")
    qr.add_argument(
        "--gateway",
        metavar="WS_URL",
        help="gateway WebSocket URL (env MOLTIS_URL; default: the local gateway from the config)",
    )
    qr.add_argument("--token", help="gateway token (env MOLTIS_TOKEN; default: the secret store)")
    qr.add_argument("--password", help="gateway password (env MOLTIS_PASSWORD)")
    qr.add_argument(
        "--tls-fingerprint",
        metavar="SHA256",
        help="pin the gateway's self-signed certificate for wss:// (env MOLTIS_TLS_FINGERPRINT)",
    )
    qr.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)"
    )


def _connection(args: argparse.Namespace) -> argparse.Namespace:
    """The client flags as `client_for` reads them (`--url` here is the phone's URL)."""
    return argparse.Namespace(
        url=args.gateway,
        token=args.token,
        password=args.password,
        tls_fingerprint=args.tls_fingerprint,
        timeout=args.timeout,
    )


def _error_code(exc: GatewayRequestError) -> str:
    details = exc.error.get("details")
    return str(details.get("code", "")) if isinstance(details, dict) else ""


async def _setup_code(conn: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    from moltis_desktop.cli.connect import client_for

    async with client_for(conn, _SCOPES) as client:
        result: dict[str, Any] = await client.call("device.pair.setupCode", params)
        return result


async def _open_to_lan(conn: argparse.Namespace) -> Any:
    """Set gateway.bind = "lan" through the gateway, unless it runs without auth."""
    from moltis_desktop.cli.config_cmd import patch_config
    from moltis_desktop.cli.connect import client_for

    async with client_for(conn, _SCOPES) as client:
        status = await client.call("status", {})
        mode = str((status or {}).get("gateway", {}).get("authMode", ""))
        if mode == "none":
            raise MoltisError(
                "refusing to open the gateway to the network: it runs without auth "
                '(gateway.auth.mode = "none"). Turn on a token or password first, then rerun '
                "`moltis qr --lan`."
            )
        return await patch_config(
            client, {"gateway": {"bind": "lan"}}, restartDelayMs=_REBIND_DELAY_MS
        )


async def _after_rebind(conn: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The setup code, once the gateway listens on the network (up to `REBIND_WAIT_S`)."""
    deadline = time.monotonic() + REBIND_WAIT_S
    last: MoltisError | None = None
    while time.monotonic() < deadline:
        try:
            return await _setup_code(conn, params)
        except GatewayUnreachableError as exc:
            last = exc  # the listener is moving
        except GatewayRequestError as exc:
            if _error_code(exc) != "LAN_DISABLED":
                raise
            last = exc
        await asyncio.sleep(0.25)
    raise MoltisError(
        f"the gateway did not move to the network within {REBIND_WAIT_S:g} s"
        + (f" ({last})" if last else "")
        + "; see its log, or try `moltis qr` again"
    )


def _lan_disabled_hint(exc: GatewayRequestError) -> str:
    message = str(exc.error.get("message") or exc)
    return (
        f"{message}\n"
        "rerun with `moltis qr --lan` to let the gateway listen on your network (its token "
        "and pairing approval stay required), or give the address phones use with "
        "`moltis qr --url wss://…`"
    )


def _expiry(ms: Any) -> str:
    when = datetime.datetime.fromtimestamp(int(ms) / 1000)
    minutes = max(0, round((int(ms) / 1000 - time.time()) / 60))
    return f"{when:%H:%M} (in {minutes} min)"


def print_qr(text: str, out: Any = None) -> None:
    """Draw `text` as a QR code with text blocks (works in any terminal or file)."""
    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(text)
    qr.make(fit=True)
    qr.print_ascii(out=out or sys.stdout, tty=False, invert=True)


def cmd_qr(args: argparse.Namespace) -> int:
    conn = _connection(args)
    params: dict[str, Any] = {"bootstrapProfile": args.profile}
    if args.url:
        params["publicUrl"] = args.url
    note = sys.stderr if args.json else sys.stdout
    try:
        result = run(_setup_code(conn, params))
    except GatewayRequestError as exc:
        if _error_code(exc) != "LAN_DISABLED":
            raise
        if not args.lan:
            raise MoltisError(_lan_disabled_hint(exc)) from None
        run(_open_to_lan(conn))
        print(
            'The gateway now listens on your network (gateway.bind = "lan"); its token and '
            "pairing approval are still required.",
            file=note,
        )
        result = run(_after_rebind(conn, params))
    code = str(result["setupCode"])
    urls = list(result.get("gatewayUrls") or [result["gatewayUrl"]])
    if args.json:
        print_json(
            {
                "setupId": result["setupId"],
                "setupCode": code,
                "url": result["gatewayUrl"],
                "urls": urls,
                "access": result["access"],
                "accessDowngraded": bool(result.get("accessDowngraded")),
                "expiresAtMs": result["expiresAtMs"],
            }
        )
        return 0
    if not args.no_ascii:
        print_qr(code)
        print()
    print("Scan the QR code in the OpenClaw app, or paste the setup code:")
    print(f"  {code}")
    print(f"Link: oc-pair://{code}")
    print(f"Gateway: {', '.join(urls)}")
    access = str(result["access"])
    if result.get("accessDowngraded"):
        print(
            f"Access: {access} (full access is not granted over plain ws:// on the network: "
            "turn on gateway.tls.enabled for full access)"
        )
    else:
        print(f"Access: {access}")
    print(f"Expires: {_expiry(result['expiresAtMs'])}")
    print(
        "Next: when the phone asks to pair, approve it with `moltis devices approve <id>` "
        "(see `moltis devices list`) or from the tray."
    )
    return 0
