"""TLS: the self-signed certificate (made once, kept, pinned by its SHA-256) and the gateway
serving `wss://` and `https://` with it."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import logging
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from moltis_desktop.gateway.tls import (
    certificate_fingerprint,
    load_or_create_certificate,
    read_fingerprint,
    ssl_context,
    tls_paths,
)
from tests.conftest import MakeClient, StartGateway
from tests.support.process import gateway_process
from tests.support.schema import FrameValidator
from tests.support.wsclient import ProtoClient

STEP_S = 10.0
TOKEN = "tls-token-0123456789"


def served_fingerprint(port: int) -> str:
    """The fingerprint of the certificate the server at `port` presents."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return certificate_fingerprint(ssl.PEM_cert_to_DER_cert(pem))


@asynccontextmanager
async def pinned(fingerprint: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that trusts exactly the certificate with this fingerprint."""
    connector = aiohttp.TCPConnector(ssl=aiohttp.Fingerprint(bytes.fromhex(fingerprint)))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


# ---------------------------------------------------------------- the certificate


def test_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    material = load_or_create_certificate(tmp_path)
    cert_path, key_path = tls_paths(tmp_path)
    assert (material.cert_path, material.key_path) == (cert_path, key_path)
    assert cert_path == tmp_path / "tls" / "cert.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_bytes(Encoding.DER)
    assert material.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert len(material.fingerprint_sha256) == 64 and ":" not in material.fingerprint_sha256
    assert material.fingerprint_sha256 == material.fingerprint_sha256.lower()
    assert read_fingerprint(tmp_path) == material.fingerprint_sha256

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Moltis Desktop"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert lifetime > datetime.timedelta(days=9 * 365)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = sans.get_values_for_type(x509.DNSName)
    short = socket.gethostname().split(".")[0]
    assert {"localhost", short, f"{short}.local"} <= set(names)
    ips = sans.get_values_for_type(x509.IPAddress)
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= set(ips)

    # Kept across restarts: the same files, the same fingerprint.
    before = cert_path.read_bytes()
    again = load_or_create_certificate(tmp_path)
    assert again.fingerprint_sha256 == material.fingerprint_sha256
    assert cert_path.read_bytes() == before

    context = ssl_context(material)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_broken_certificate_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_or_create_certificate(tmp_path)
    cert_path, key_path = tls_paths(tmp_path)

    key_path.chmod(0o644)  # too open: tightened, not replaced
    assert load_or_create_certificate(tmp_path).fingerprint_sha256 == first.fingerprint_sha256
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    cert_path.write_text("not a certificate")
    with caplog.at_level(logging.WARNING, logger="moltis_desktop.gateway.tls"):
        second = load_or_create_certificate(tmp_path)
    assert second.fingerprint_sha256 != first.fingerprint_sha256
    assert "making a new one" in caplog.text and "setup code" in caplog.text
    assert read_fingerprint(tmp_path) == second.fingerprint_sha256

    # A key that does not belong to the certificate is no better.
    other = tmp_path / "other"
    load_or_create_certificate(other)
    key_path.write_bytes(tls_paths(other)[1].read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="moltis_desktop.gateway.tls"):
        third = load_or_create_certificate(tmp_path)
    assert third.fingerprint_sha256 not in (second.fingerprint_sha256, first.fingerprint_sha256)
    assert "does not belong" in caplog.text


# ---------------------------------------------------------------- the gateway


async def test_gateway_serves_wss_and_https_with_a_pinned_certificate(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = home / "state"
    with gateway_process(home, token=TOKEN, MOLTIS_GATEWAY__TLS__ENABLED="true") as gw:
        assert gw.url == f"wss://127.0.0.1:{gw.port}"
        fingerprint = read_fingerprint(state)
        assert fingerprint is not None
        assert served_fingerprint(gw.port) == fingerprint
        assert stat.S_IMODE(tls_paths(state)[1].stat().st_mode) == 0o600
        assert f"listening on wss://127.0.0.1:{gw.port}" in gw.output()
        assert f"web app: https://127.0.0.1:{gw.port}/" in gw.output()

        async with asyncio.timeout(STEP_S), pinned(fingerprint) as session:
            async with session.get(f"{gw.http}/healthz") as res:
                assert res.status == 200
            async with session.ws_connect(gw.url) as ws:
                challenge = await ws.receive_json()
                assert challenge["type"] == "event"
                assert challenge["event"] == "connect.challenge"
            client = ProtoClient(session, gw.url, FrameValidator())
            try:
                hello = await client.connect(token=TOKEN, scopes=["operator.read"])
                assert hello["ok"], hello
            finally:
                await client.close()

        wrong = hashlib.sha256(b"some other certificate").hexdigest()
        async with asyncio.timeout(STEP_S), pinned(wrong) as session:
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                await session.get(f"{gw.http}/healthz")
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                await session.ws_connect(gw.url)
        async with asyncio.timeout(STEP_S), aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):  # plain http to the TLS port
                await plain.get(f"http://127.0.0.1:{gw.port}/healthz")

    # A restart serves the same certificate (phones keep their pin).
    with gateway_process(home, token=TOKEN, MOLTIS_GATEWAY__TLS__ENABLED="true") as gw:
        assert served_fingerprint(gw.port) == fingerprint


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(int(STEP_S / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway did not rebind")


async def test_turning_tls_on_and_off_rebinds_on_the_same_port(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway()
    gw, config = handle.gateway.state, handle.runtime.config
    assert config is not None
    port = gw.port
    assert gw.tls_fingerprint is None
    assert (gw.url, gw.http_url) == (f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    before = make_client(gw.url)
    assert (await before.connect(token=handle.token, scopes=["operator.read"]))["ok"]

    config.patch({"gateway": {"tls": {"enabled": True}}})
    await _until(lambda: gw.tls_fingerprint is not None)
    fingerprint = gw.tls_fingerprint
    assert fingerprint is not None
    assert fingerprint == read_fingerprint(handle.runtime.paths.state_dir)
    assert gw.port == port  # port 0 in the config keeps the port in use
    assert (gw.url, gw.http_url) == (f"wss://127.0.0.1:{port}", f"https://127.0.0.1:{port}")
    assert await asyncio.to_thread(served_fingerprint, port) == fingerprint
    async with (
        asyncio.timeout(STEP_S),
        pinned(fingerprint) as session,
        session.get(f"{gw.http_url}/healthz") as res,
    ):
        assert res.status == 200
    assert (await before.call("health"))["ok"]  # the open connection stayed

    config.patch({"gateway": {"tls": {"enabled": False}}})
    await _until(lambda: gw.tls_fingerprint is None)
    assert gw.url == f"ws://127.0.0.1:{port}"
    after = make_client(gw.url)
    assert (await after.connect(token=handle.token, scopes=["operator.read"]))["ok"]
