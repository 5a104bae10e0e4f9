"""`moltis discover`: find gateways on the local network (mDNS / Bonjour)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moltis_desktop.cli.output import print_json, run
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.gateway.discovery import GATEWAY_SERVICE, MOLTIS_SERVICE

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceInfo

_LOGGER = logging.getLogger(__name__)

_RESOLVE_MS = 1500
_SERVICES = {GATEWAY_SERVICE: "openclaw-gw", MOLTIS_SERVICE: "moltis"}


def add_discover_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subparsers.add_parser(
        "discover", help="find gateways on the local network (mDNS / Bonjour)"
    )
    cmd.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to listen for answers (default 3)"
    )
    cmd.add_argument("--json", action="store_true", help="print JSON for scripts")
    cmd.add_argument(
        "--loopback",
        action="store_true",
        help="look on this machine only (127.0.0.1), e.g. for a gateway bound to loopback",
    )


@dataclass(frozen=True)
class FoundGateway:
    """One advertised service, resolved."""

    service: str
    """`openclaw-gw` (`_openclaw-gw._tcp`) or `moltis` (`_moltis._tcp`)."""
    name: str
    """The instance name."""
    host: str
    """The host name the record points at (`<host>.local.`)."""
    addresses: tuple[str, ...]
    port: int
    txt: dict[str, str] = field(default_factory=dict)

    @property
    def tls_sha256(self) -> str:
        return self.txt.get("gatewayTlsSha256", "")

    @property
    def tls(self) -> bool:
        return self.txt.get("gatewayTls") == "1"

    @property
    def gateway_port(self) -> int:
        declared = self.txt.get("gatewayPort", "")
        return int(declared) if declared.isdigit() else self.port

    def url(self, *, loopback: bool = False) -> str:
        """The WebSocket URL to use for this gateway."""
        ipv4 = [a for a in self.addresses if ":" not in a]
        if loopback and "127.0.0.1" in self.addresses:
            host = "127.0.0.1"
        elif ipv4:
            host = ipv4[0]
        elif self.addresses:
            host = f"[{self.addresses[0]}]"
        else:
            host = self.txt.get("lanHost") or self.host.rstrip(".")
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.gateway_port}"

    def to_json(self, *, loopback: bool = False) -> dict[str, Any]:
        return {
            "service": self.service,
            "name": self.name,
            "host": self.host,
            "addresses": list(self.addresses),
            "port": self.port,
            "tls": self.tls,
            "tlsSha256": self.tls_sha256 or None,
            "url": self.url(loopback=loopback),
            "txt": dict(self.txt),
        }


def _found(service: str, info: AsyncServiceInfo) -> FoundGateway:
    txt = {k: v or "" for k, v in info.decoded_properties.items()}
    instance = info.name[: -len(service) - 1] if info.name.endswith(service) else info.name
    return FoundGateway(
        service=_SERVICES[service],
        name=instance,
        host=info.server or "",
        addresses=tuple(info.parsed_addresses()),
        port=info.port or 0,
        txt=txt,
    )


async def browse(timeout_s: float, *, loopback: bool = False) -> list[FoundGateway]:
    """Listen for gateways' mDNS records for `timeout_s` seconds; what answered, resolved."""
    from zeroconf import InterfaceChoice, IPVersion
    from zeroconf import ServiceStateChange as Change
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    try:
        aiozc = AsyncZeroconf(
            interfaces=["127.0.0.1"] if loopback else InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
    except OSError as exc:
        raise MoltisError(
            f"cannot listen for mDNS: {exc}. Another program may hold UDP port 5353 "
            "exclusively; connect with --url instead"
        ) from None
    resolved: dict[tuple[str, str], FoundGateway] = {}
    pending: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def resolve(service: str, name: str) -> None:
        info = AsyncServiceInfo(service, name)
        if await info.async_request(aiozc.zeroconf, _RESOLVE_MS):
            resolved[(service, name)] = _found(service, info)

    def changed(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        key = (service_type, name)
        if key in pending:
            pending.pop(key).cancel()
        if state_change is Change.Removed:
            resolved.pop(key, None)
        else:
            pending[key] = asyncio.get_running_loop().create_task(resolve(service_type, name))

    browser = AsyncServiceBrowser(aiozc.zeroconf, list(_SERVICES), handlers=[changed])
    try:
        await asyncio.sleep(timeout_s)
        tasks = [t for t in pending.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=_RESOLVE_MS / 1000)
    finally:
        for task in pending.values():
            task.cancel()
        for task in pending.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await browser.async_cancel()
        await aiozc.async_close()
    return sorted(resolved.values(), key=lambda g: (g.name.lower(), g.service))


def _same_gateway(a: FoundGateway, b: FoundGateway) -> bool:
    return a.gateway_port == b.gateway_port and bool(set(a.addresses) & set(b.addresses))


def _shown(found: list[FoundGateway]) -> list[FoundGateway]:
    """One row per gateway: its `_openclaw-gw` record, else its `_moltis` one."""
    gateways = [g for g in found if g.service == "openclaw-gw"]
    others = [
        g
        for g in found
        if g.service != "openclaw-gw" and not any(_same_gateway(g, o) for o in gateways)
    ]
    return gateways + others


def _print_table(found: list[FoundGateway], *, loopback: bool) -> None:
    rows = [("NAME", "HOST", "ADDRESSES", "PORT", "TLS", "URL")]
    for g in _shown(found):
        tls = f"{g.tls_sha256[:12]}…" if g.tls_sha256 else ("yes" if g.tls else "no")
        rows.append(
            (
                g.name,
                g.txt.get("lanHost") or g.host.rstrip("."),
                ",".join(g.addresses) or "-",
                str(g.gateway_port),
                tls,
                g.url(loopback=loopback),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def cmd_discover(args: argparse.Namespace) -> int:
    timeout = max(0.1, float(args.timeout))
    found = run(browse(timeout, loopback=args.loopback))
    if args.json:
        print_json([g.to_json(loopback=args.loopback) for g in found])
        return 0
    if not found:
        where = "on this machine (127.0.0.1)" if args.loopback else "on the local network"
        print(
            f"No gateways found {where} in {timeout:g} s.\n"
            'On the gateway\'s machine, check that discovery.mdns.mode is not "off" (nor '
            "MOLTIS_DISABLE_MDNS=1 set), and that the gateway listens on the network "
            '(gateway.bind = "lan"; a loopback gateway is only seen with --loopback). A '
            "firewall may also block mDNS (UDP port 5353)."
        )
        return 0
    _print_table(found, loopback=args.loopback)
    return 0
