"""Bonjour / mDNS: the gateway advertises itself as `_openclaw-gw._tcp` (OpenClaw's apps find
it) and `_moltis._tcp` (Moltis' own), so phones on the same network can find it.

TXT keys follow OpenClaw (`docs/gateway/bonjour.md`): `role`, `displayName`, `lanHost`,
`gatewayPort`, `transport`, `canvasPort`, `gatewayTls` + `gatewayTlsSha256` when TLS is on,
and in `full` mode `cliPath` and `sshPort`. `minimal` mode leaves out the CLI path, the SSH
port and host names. `_moltis._tcp` carries `version`, `port` and (full) `hostname`, as
Moltis' `crates/gateway/src/mdns.rs` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import re
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from moltis_desktop.config.settings import Settings

if TYPE_CHECKING:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

_LOGGER = logging.getLogger(__name__)

GATEWAY_SERVICE = "_openclaw-gw._tcp.local."
"""OpenClaw's service type: what its apps browse for."""
MOLTIS_SERVICE = "_moltis._tcp.local."
"""Moltis' own service type."""
DISABLE_ENV = ("MOLTIS_DISABLE_MDNS", "OPENCLAW_DISABLE_BONJOUR")
"""Environment variables that, set to 1, turn advertising off whatever the config says."""
SSH_PORT = 22
_MAX_LABEL_BYTES = 63
_MAX_TXT_ENTRY_BYTES = 255
_CLOSE_TIMEOUT_S = 3.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_NOT_IN_NAME = re.compile(r"[\x00-\x1f\x7f.]+")
_NOT_IN_HOST = re.compile(r"[^A-Za-z0-9-]+")
_NO_FAILURE = object()
IpVersionName = Literal["v4", "v6", "all"]


def mdns_disabled(env: Mapping[str, str]) -> bool:
    """Whether the environment turns advertising off (MOLTIS_DISABLE_MDNS=1, or OpenClaw's
    OPENCLAW_DISABLE_BONJOUR=1)."""
    return any(env.get(name, "").strip().lower() in _TRUE for name in DISABLE_ENV)


def short_hostname() -> str:
    """This machine's name without its domain."""
    return socket.gethostname().strip().split(".")[0] or "localhost"


def dns_label(text: str) -> str:
    """`text` as a host-name label (letters, digits, hyphens; at most 63 bytes)."""
    label = _NOT_IN_HOST.sub("-", text).strip("-")[:_MAX_LABEL_BYTES].strip("-")
    return label or "moltis"


def instance_name(configured: str, hostname: str) -> str:
    """The service instance name: `discovery.mdns.name`, else "Moltis on <host>"; without
    control characters or dots, cut to 63 bytes (DNS-SD's limit) on a character boundary."""
    name = _NOT_IN_NAME.sub(" ", configured).strip() or f"Moltis on {hostname}"
    raw = name.encode("utf-8")[:_MAX_LABEL_BYTES]
    return raw.decode("utf-8", errors="ignore").strip() or "Moltis"


def cli_path() -> str | None:
    """Where the `moltis` command is: the running one when this process is it, else the
    one on PATH."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name.startswith("moltis") and argv0.is_file():
        return str(argv0.absolute())
    return shutil.which("moltis")


@dataclass(frozen=True)
class MdnsAnnouncement:
    """What the gateway advertises, worked out from its settings and where it listens."""

    name: str
    """Service instance name (`displayName`)."""
    hostname: str
    """Short host name as a DNS label; the records point at `<hostname>.local.`."""
    port: int
    mode: Literal["minimal", "full"]
    version: str
    addresses: tuple[str, ...]
    """The addresses clients can reach the gateway on."""
    interfaces: tuple[str, ...] | None
    """Interfaces (by address) to answer on; None means all."""
    ip_version: IpVersionName
    tls_sha256: str | None = None
    cli_path: str | None = None

    @property
    def server(self) -> str:
        return f"{self.hostname}.local."

    def gateway_txt(self) -> dict[str, str]:
        """TXT of `_openclaw-gw._tcp`."""
        txt = {"role": "gateway", "displayName": self.name}
        if self.mode == "full":
            txt["lanHost"] = f"{self.hostname}.local"
        txt |= {
            "gatewayPort": str(self.port),
            "transport": "gateway",
            # The canvas is served by the gateway itself (/__openclaw__/canvas/).
            "canvasPort": str(self.port),
        }
        if self.tls_sha256:
            txt |= {"gatewayTls": "1", "gatewayTlsSha256": self.tls_sha256}
        if self.mode == "full":
            txt["sshPort"] = str(SSH_PORT)
            if self.cli_path:
                txt["cliPath"] = self.cli_path
        return _fit_txt(txt)

    def moltis_txt(self) -> dict[str, str]:
        """TXT of `_moltis._tcp`."""
        txt = {"version": self.version, "port": str(self.port)}
        if self.mode == "full":
            txt["hostname"] = self.hostname
        return _fit_txt(txt)

    def service_infos(self) -> dict[str, AsyncServiceInfo]:
        """The two records, by service type."""
        from zeroconf.asyncio import AsyncServiceInfo

        return {
            service: AsyncServiceInfo(
                service,
                f"{self.name}.{service}",
                port=self.port,
                properties=txt,
                server=self.server,
                parsed_addresses=list(self.addresses),
            )
            for service, txt in (
                (GATEWAY_SERVICE, self.gateway_txt()),
                (MOLTIS_SERVICE, self.moltis_txt()),
            )
        }


def _fit_txt(txt: dict[str, str]) -> dict[str, str]:
    # A TXT entry is one length byte: longer ones (a deep cliPath) are left out.
    return {k: v for k, v in txt.items() if len(f"{k}={v}".encode()) <= _MAX_TXT_ENTRY_BYTES}


def _network(bind_host: str) -> tuple[tuple[str, ...], tuple[str, ...] | None, IpVersionName]:
    """(addresses to advertise, interfaces to answer on, IP version) for a listen address."""
    from moltis_desktop.pairing.setupcode import lan_addresses

    if bind_host in ("", "localhost"):
        bind_host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(bind_host)
    except ValueError:  # a host name: advertise the machine's addresses
        return tuple(a for a in lan_addresses() if ":" not in a), None, "v4"
    family: IpVersionName = "v4" if addr.version == 4 else "v6"
    if addr.is_unspecified:
        found = lan_addresses()
        if family == "v4":
            found = [a for a in found if ":" not in a]
        return tuple(found), None, family if family == "v4" else "all"
    # One address (loopback included): answer on it alone.
    return (str(addr),), (str(addr),), family


def announcement_for(
    settings: Settings,
    *,
    bind_host: str,
    port: int,
    tls_sha256: str | None,
    version: str,
    env: Mapping[str, str],
    hostname: str | None = None,
) -> MdnsAnnouncement | None:
    """What to advertise for these settings, or None when advertising is off."""
    mdns = settings.discovery.mdns
    if mdns.mode == "off" or mdns_disabled(env) or port <= 0:
        return None
    host = hostname or short_hostname()
    addresses, interfaces, ip_version = _network(bind_host)
    return MdnsAnnouncement(
        name=instance_name(mdns.name, host),
        hostname=dns_label(host),
        port=port,
        mode=mdns.mode,
        version=version,
        addresses=addresses,
        interfaces=interfaces,
        ip_version=ip_version,
        tls_sha256=tls_sha256,
        cli_path=cli_path() if mdns.mode == "full" else None,
    )


def _ip_version(value: str) -> IPVersion:
    from zeroconf import IPVersion

    return {"v4": IPVersion.V4Only, "v6": IPVersion.V6Only}.get(value, IPVersion.All)


class MdnsAdvertiser:
    """Keeps the gateway's mDNS records in line with what `update` last asked for.

    The work (probing for the name takes ~2 s) runs in a background task, one change at a
    time; a failure is logged once per wanted state and never reaches the gateway.
    """

    def __init__(self, *, version: str, env: Mapping[str, str]) -> None:
        self.version = version
        self._env = {name: env[name] for name in DISABLE_ENV if name in env}
        self._wanted: MdnsAnnouncement | None = None
        self._current: MdnsAnnouncement | None = None
        self._failed: object = _NO_FAILURE
        """The wanted state that last failed (not retried until something changes)."""
        self._zc: AsyncZeroconf | None = None
        self._zc_key: tuple[tuple[str, ...] | None, str] | None = None
        self._infos: dict[str, AsyncServiceInfo] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def current(self) -> MdnsAnnouncement | None:
        """What is advertised now (None: nothing)."""
        return self._current

    @property
    def service_names(self) -> dict[str, str]:
        """The registered instance names by service type (zeroconf renames on conflict)."""
        return {service: info.name for service, info in self._infos.items()}

    def update(
        self, settings: Settings, *, bind_host: str, port: int, tls_sha256: str | None
    ) -> None:
        """Advertise what these settings ask for (soon, in the background)."""
        if self._closed:
            return
        self._wanted = announcement_for(
            settings,
            bind_host=bind_host,
            port=port,
            tls_sha256=tls_sha256,
            version=self.version,
            env=self._env,
        )
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mdns")

    async def settle(self) -> None:
        """Wait until the records match the last `update` (or it failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Withdraw the records (goodbye packets) and close the sockets."""
        self._closed = True
        self._wanted = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._shutdown()

    async def _run(self) -> None:
        while self._wanted not in (self._current, self._failed):
            wanted = self._wanted
            try:
                await self._apply(wanted)
            except Exception as exc:
                self._failed = wanted
                _LOGGER.warning(
                    "cannot advertise the gateway on the local network (mDNS): %s. The gateway "
                    "works without it: give phones a setup code or its address instead. To "
                    'silence this, set discovery.mdns.mode = "off"',
                    str(exc) or type(exc).__name__,
                )
                with contextlib.suppress(Exception):
                    await self._shutdown()
            else:
                self._failed = _NO_FAILURE

    async def _apply(self, wanted: MdnsAnnouncement | None) -> None:
        key = None if wanted is None else (wanted.interfaces, wanted.ip_version)
        if self._zc is not None and key != self._zc_key:
            await self._shutdown()
        if wanted is None:
            return
        if self._zc is None:
            # zeroconf's first import takes ~0.1 s: not on the event loop.
            await asyncio.to_thread(importlib.import_module, "zeroconf.asyncio")
            from zeroconf import InterfaceChoice
            from zeroconf.asyncio import AsyncZeroconf

            interfaces = (
                InterfaceChoice.All if wanted.interfaces is None else list(wanted.interfaces)
            )
            self._zc = AsyncZeroconf(
                interfaces=interfaces, ip_version=_ip_version(wanted.ip_version)
            )
            self._zc_key = key
        zc = self._zc
        infos = wanted.service_infos()
        current = self._current
        if current is not None and current.name == wanted.name and self._infos:
            for service, info in infos.items():
                info.name = self._infos[service].name  # keep a name zeroconf changed
            await asyncio.gather(*[await zc.async_update_service(i) for i in infos.values()])
        else:
            if self._infos:
                old = list(self._infos.values())
                self._infos = {}
                await asyncio.gather(*[await zc.async_unregister_service(i) for i in old])
            self._current = None
            # Probing runs ~2 s per record: both at once.
            await asyncio.gather(*(self._register(zc, i) for i in infos.values()))
            names = ", ".join(sorted({i.name.split("._")[0] for i in infos.values()}))
            _LOGGER.info("advertised on mDNS as %r (port %d)", names, wanted.port)
        self._infos = infos
        self._current = wanted

    @staticmethod
    async def _register(zc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        announced = await zc.async_register_service(info, allow_name_change=True)
        await announced

    async def _shutdown(self) -> None:
        zc, self._zc, self._zc_key = self._zc, None, None
        self._infos = {}
        self._current = None
        if zc is not None:
            await zc.async_close()  # sends goodbyes for whatever is registered
