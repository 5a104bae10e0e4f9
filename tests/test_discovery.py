"""mDNS: gateways advertise `_openclaw-gw._tcp` and `_moltis._tcp` on loopback, `moltis
discover` finds them, and the records follow the config and go away with the gateway.

Everything stays on 127.0.0.1 (`Zeroconf(interfaces=["127.0.0.1"])`); other test runs may
advertise there too, so records are told apart by their unique names and ports.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from moltis_desktop.gateway.discovery import (
    GATEWAY_SERVICE,
    MOLTIS_SERVICE,
    dns_label,
    instance_name,
    short_hostname,
)
from tests.conftest import StartGateway
from tests.support.process import BIN, base_env, gateway_process

STEP_S = 8.0
HOST = dns_label(short_hostname())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def discover(home: Path, *, timeout: float = 2.0) -> tuple[list[dict[str, Any]], str]:
    """`moltis discover --json --loopback` and `moltis discover --loopback` (the table), in
    two processes at once: a responder multicasts a record at most once a second (RFC 6762
    §6), so two browsers asking one after the other would not see the same answers."""
    args = [str(BIN / "moltis"), "discover", "--loopback", "--timeout", str(timeout)]
    procs = [
        subprocess.Popen(
            cmd, env=base_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd in ([*args, "--json"], args)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        outputs.append(out)
    found: list[dict[str, Any]] = json.loads(outputs[0])
    return found, outputs[1]


def discover_until(
    home: Path, wanted: Callable[[list[dict[str, Any]], str], bool]
) -> tuple[list[dict[str, Any]], str]:
    """Run `discover` until what it finds satisfies `wanted` (three tries)."""
    found: list[dict[str, Any]] = []
    table = ""
    for _ in range(3):
        found, table = discover(home)
        if wanted(found, table):
            return found, table
    raise AssertionError(f"not found: {json.dumps(found, indent=1)}\n{table}")


def by_port(found: list[dict[str, Any]], port: int) -> dict[str, dict[str, Any]]:
    """The records of the gateway on `port`, by service."""
    return {g["service"]: g for g in found if g["port"] == port}


class LoopbackBrowser:
    """Watches both service types on 127.0.0.1 from this process."""

    def __init__(self) -> None:
        self.aiozc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.events: list[tuple[ServiceStateChange, str, str]] = []
        self.browser: AsyncServiceBrowser | None = None
        self.changed = asyncio.Event()

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        self.events.append((state_change, service_type, name))
        self.changed.set()

    def start(self) -> None:
        self.browser = AsyncServiceBrowser(
            self.aiozc.zeroconf, [GATEWAY_SERVICE, MOLTIS_SERVICE], handlers=[self._on_change]
        )

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.async_cancel()
        await self.aiozc.async_close()

    def seen(self, change: ServiceStateChange, name: str, service: str = GATEWAY_SERVICE) -> bool:
        return (change, service, f"{name}.{service}") in self.events

    async def wait(
        self, change: ServiceStateChange, name: str, service: str = GATEWAY_SERVICE
    ) -> None:
        async with asyncio.timeout(STEP_S):
            while not self.seen(change, name, service):
                self.changed.clear()
                await self.changed.wait()

    async def resolve(self, name: str, service: str = GATEWAY_SERVICE) -> AsyncServiceInfo:
        info = AsyncServiceInfo(service, f"{name}.{service}")
        assert await info.async_request(self.aiozc.zeroconf, 3000), name
        return info


@pytest.fixture
async def browser() -> AsyncIterator[LoopbackBrowser]:
    watcher = LoopbackBrowser()
    watcher.start()
    try:
        yield watcher
    finally:
        await watcher.close()


def test_discover_finds_gateways_with_openclaws_txt_keys(tmp_path: Path) -> None:
    full_name, minimal_name = unique("Full"), unique("Minimal")
    with ExitStack() as stack:
        full = stack.enter_context(
            gateway_process(
                tmp_path / "full",
                MOLTIS_DISABLE_MDNS="0",
                MOLTIS_DISCOVERY__MDNS__MODE="full",
                MOLTIS_DISCOVERY__MDNS__NAME=full_name,
            )
        )
        minimal = stack.enter_context(
            gateway_process(
                tmp_path / "minimal",
                MOLTIS_DISABLE_MDNS="0",
                MOLTIS_DISCOVERY__MDNS__NAME=minimal_name,  # minimal is the default
            )
        )
        found, table = discover_until(
            tmp_path,
            lambda f, t: (
                len(by_port(f, full.port)) == 2
                and len(by_port(f, minimal.port)) == 2
                and full_name in t
                and minimal_name in t
            ),
        )

    records = by_port(found, full.port)
    gw = records["openclaw-gw"]
    assert gw["name"] == full_name
    assert gw["addresses"] == ["127.0.0.1"]
    assert gw["host"] == f"{HOST}.local."
    assert gw["url"] == f"ws://127.0.0.1:{full.port}"
    assert gw["tls"] is False and gw["tlsSha256"] is None
    assert gw["txt"] == {
        "role": "gateway",
        "displayName": full_name,
        "lanHost": f"{HOST}.local",
        "gatewayPort": str(full.port),
        "transport": "gateway",
        "canvasPort": str(full.port),
        "sshPort": "22",
        "cliPath": str(BIN / "moltis"),
    }
    from moltis_desktop import __version__

    assert records["moltis"]["txt"] == {
        "version": __version__,
        "port": str(full.port),
        "hostname": HOST,
    }

    # The table: one row per gateway (its `_moltis._tcp` record is not shown twice).
    assert table.split()[:6] == ["NAME", "HOST", "ADDRESSES", "PORT", "TLS", "URL"]
    rows = [line.split() for line in table.splitlines() if full_name in line]
    assert rows == [[full_name, f"{HOST}.local", "127.0.0.1", str(full.port), "no", gw["url"]]]
    assert sum(minimal_name in line for line in table.splitlines()) == 1

    # Minimal mode: no CLI path, SSH port or host names.
    records = by_port(found, minimal.port)
    assert records["openclaw-gw"]["name"] == minimal_name
    assert records["openclaw-gw"]["txt"] == {
        "role": "gateway",
        "displayName": minimal_name,
        "gatewayPort": str(minimal.port),
        "transport": "gateway",
        "canvasPort": str(minimal.port),
    }
    assert records["moltis"]["txt"] == {"version": __version__, "port": str(minimal.port)}


def test_discover_says_so_when_nothing_is_found(tmp_path: Path) -> None:
    # Other gateways may be advertising on this machine's loopback: either answer is fine,
    # as long as an empty result says what to check.
    result = subprocess.run(
        [str(BIN / "moltis"), "discover", "--loopback", "--timeout", "0.3"],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if result.stdout.startswith("No gateways found"):
        assert "discovery.mdns.mode" in result.stdout and 'gateway.bind = "lan"' in result.stdout
    else:
        assert result.stdout.split()[:6] == ["NAME", "HOST", "ADDRESSES", "PORT", "TLS", "URL"]


async def test_the_record_goes_away_with_the_gateway(
    tmp_path: Path, browser: LoopbackBrowser
) -> None:
    name = unique("Leaving")
    with gateway_process(
        tmp_path / "home", MOLTIS_DISABLE_MDNS="0", MOLTIS_DISCOVERY__MDNS__NAME=name
    ) as gw:
        await browser.wait(ServiceStateChange.Added, name)
        await browser.wait(ServiceStateChange.Added, name, MOLTIS_SERVICE)
        info = await browser.resolve(name)
        assert info.port == gw.port
    # SIGTERM: the gateway says goodbye before it exits.
    await browser.wait(ServiceStateChange.Removed, name)
    await browser.wait(ServiceStateChange.Removed, name, MOLTIS_SERVICE)


async def test_off_and_the_kill_switches_advertise_nothing(
    start_gateway: StartGateway, browser: LoopbackBrowser, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {what: unique(what) for what in ("Off", "MoltisKill", "BonjourKill", "Control")}

    def mdns(name: str, mode: str = "minimal") -> dict[str, Any]:
        return {"discovery": {"mdns": {"name": name, "mode": mode}}}

    # The kill switches are read when the gateway starts.
    monkeypatch.setenv("MOLTIS_DISABLE_MDNS", "1")
    killed = await start_gateway(overrides=mdns(names["MoltisKill"], "full"))
    monkeypatch.delenv("MOLTIS_DISABLE_MDNS")
    monkeypatch.setenv("OPENCLAW_DISABLE_BONJOUR", "1")
    bonjour_killed = await start_gateway(overrides=mdns(names["BonjourKill"], "full"))
    monkeypatch.delenv("OPENCLAW_DISABLE_BONJOUR")
    off = await start_gateway(overrides=mdns(names["Off"], "off"))
    control = await start_gateway(overrides=mdns(names["Control"]))

    await browser.wait(ServiceStateChange.Added, names["Control"])
    assert control.gateway.mdns is not None
    await control.gateway.mdns.settle()
    await asyncio.sleep(0.5)  # the others started first: they would be here by now
    ours = {n for *_, n in browser.events}
    for what in ("Off", "MoltisKill", "BonjourKill"):
        assert not any(names[what] in n for n in ours), what
    for handle in (killed, bonjour_killed, off):
        assert handle.gateway.mdns is not None and handle.gateway.mdns.current is None


async def test_records_follow_config_changes(
    start_gateway: StartGateway, browser: LoopbackBrowser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOLTIS_DISABLE_MDNS")
    first, second = unique("Before"), unique("After")
    handle = await start_gateway(
        f'[gateway.tls]\nenabled = true\n[discovery.mdns]\nmode = "full"\nname = "{first}"\n'
    )
    gw, config = handle.gateway.state, handle.runtime.config
    assert config is not None
    await browser.wait(ServiceStateChange.Added, first)
    txt = (await browser.resolve(first)).decoded_properties
    assert gw.tls_fingerprint is not None
    assert txt["gatewayTls"] == "1"
    assert txt["gatewayTlsSha256"] == gw.tls_fingerprint
    assert txt["gatewayPort"] == str(gw.port)

    # A new name: the old record says goodbye, the new one appears.
    config.patch({"discovery": {"mdns": {"name": second}}})
    await browser.wait(ServiceStateChange.Removed, first)
    await browser.wait(ServiceStateChange.Added, second)
    info = await browser.resolve(second)
    assert info.decoded_properties["displayName"] == second
    assert info.decoded_properties["gatewayTlsSha256"] == gw.tls_fingerprint

    # TLS off (a rebind): same name, the TXT record no longer offers TLS.
    config.patch({"discovery": {"mdns": {"mode": "minimal"}}})
    config.patch({"gateway": {"tls": {"enabled": False}}})
    async with asyncio.timeout(STEP_S):
        while True:
            assert handle.gateway.mdns is not None
            await handle.gateway.mdns.settle()
            props = (await browser.resolve(second)).decoded_properties
            if "gatewayTls" not in props and "lanHost" not in props:
                break
            await asyncio.sleep(0.05)
    assert gw.tls_fingerprint is None
    assert props["gatewayPort"] == str(gw.port)

    # Off: withdrawn.
    config.patch({"discovery": {"mdns": {"mode": "off"}}})
    await browser.wait(ServiceStateChange.Removed, second)


def test_instance_names_are_cut_to_63_bytes() -> None:
    assert instance_name("", "box") == "Moltis on box"
    assert instance_name("  Kitchen.Mac\n ", "box") == "Kitchen Mac"
    long = instance_name("é" * 40, "box")
    assert len(long.encode()) <= 63 and long == "é" * 31
    assert dns_label("Bob's MacBook Pro") == "Bob-s-MacBook-Pro"
