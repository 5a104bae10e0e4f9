"""Shared fixtures: gateways on free loopback ports, schema-validating clients, isolation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import keyring
import pytest

from moltis_desktop.config.loader import deep_merge
from moltis_desktop.core.logging import configure_logging
from moltis_desktop.gateway.server import GatewayServer
from moltis_desktop.runtime import Runtime
from tests.support.fake_llm import FakeLLM
from tests.support.keyrings import MemoryKeyring
from tests.support.schema import FrameValidator, schema_path
from tests.support.wsclient import ProtoClient

TOKEN = "test-token-0123456789"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not schema_path().exists():
        raise pytest.UsageError(
            f"OpenClaw's protocol schema is missing ({schema_path()}): run `make install`"
        )


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's own config, secrets, keyring or gateway."""
    for name in list(os.environ):
        if name.startswith("MOLTIS_") and name != "MOLTIS_TEST_CACHE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MOLTIS_HOME", str(tmp_path / "default-home"))
    # Gateways started by tests do not advertise on mDNS unless the test removes this.
    monkeypatch.setenv("MOLTIS_DISABLE_MDNS", "1")
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)
    configure_logging(console=None)


@pytest.fixture
def memory_keyring() -> MemoryKeyring:
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    return backend


@dataclass
class GatewayHandle:
    runtime: Runtime
    gateway: GatewayServer
    token: str
    home: Path

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://")

    @property
    def config_file(self) -> Path:
        return self.runtime.paths.config_file

    @property
    def log_file(self) -> Path:
        return self.gateway.state.log_file


StartGateway = Callable[..., Awaitable[GatewayHandle]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start an in-process gateway (the real Runtime) on a free loopback port."""
    runtimes: list[Runtime] = []

    async def start(
        config: str | None = None,
        *,
        config_name: str = "moltis.toml",
        env: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
        port: int | None = 0,
        token: str | None = TOKEN,
    ) -> GatewayHandle:
        home = tmp_path / f"gw{len(runtimes)}"
        (home / "config").mkdir(parents=True)
        full_env = {"MOLTIS_HOME": str(home), "HOME": str(home)}
        if token is not None:
            full_env["MOLTIS_TOKEN"] = token
        if config_name != "moltis.toml":
            full_env["MOLTIS_CONFIG"] = str(home / "config" / config_name)
        if config is not None:
            (home / "config" / config_name).write_text(config, encoding="utf-8")
        full_env.update(env or {})
        layered = deep_merge(
            {"gateway": {"port": port}} if port is not None else {}, overrides or {}
        )
        runtime = Runtime(env=full_env, overrides=layered, console=None, prompt=None)
        runtimes.append(runtime)
        gateway = await runtime.start()
        await runtime.agent_ready()
        return GatewayHandle(runtime, gateway, token or "", home)

    yield start
    for runtime in reversed(runtimes):
        await runtime.stop()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> GatewayHandle:
    """A gateway with default settings."""
    return await start_gateway()


@pytest.fixture
def frame_validator() -> FrameValidator:
    return FrameValidator()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


MakeClient = Callable[..., ProtoClient]


@pytest.fixture
async def make_client(
    http_session: aiohttp.ClientSession, frame_validator: FrameValidator
) -> AsyncIterator[MakeClient]:
    """Make protocol clients (closed at the end of the test)."""
    clients: list[ProtoClient] = []

    def make(url: str) -> ProtoClient:
        client = ProtoClient(http_session, url, frame_validator)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def operator(gateway: GatewayHandle, make_client: MakeClient) -> ProtoClient:
    """A connected cli client with read + write + admin scopes."""
    client = make_client(gateway.url)
    res = await client.connect(
        token=gateway.token, scopes=["operator.read", "operator.write", "operator.admin"]
    )
    assert res["ok"], res
    return client


FAKE_STEP_S = 30.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    """A fake LLM provider on a loopback port, speaking the Anthropic Messages API and
    OpenAI Chat Completions (models `fake-model-1` and `fake-model-2`)."""
    async with asyncio.timeout(FAKE_STEP_S):
        server = await FakeLLM().start()
    try:
        yield server
    finally:
        async with asyncio.timeout(FAKE_STEP_S):
            await server.close()
