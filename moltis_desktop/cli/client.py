"""A small client of the gateway's WebSocket protocol, used by the `moltis` CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import platform
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from moltis_desktop import __version__
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.protocol.constants import PROTOCOL_VERSION


class GatewayUnreachableError(MoltisError):
    """No gateway answers at the URL."""

    exit_code = 2


class GatewayRequestError(MoltisError):
    """The gateway answered with `ok:false`."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.error = error
        self.code = str(error.get("code", "ERROR"))
        super().__init__(f"{method}: {error.get('message', 'failed')} ({self.code})")


def tls_for(url: str, fingerprint: str | None) -> aiohttp.Fingerprint | None:
    """How to check the certificate of a `wss://` / `https://` URL: pinned to `fingerprint`
    (hex SHA-256 of the certificate, colons allowed) when given, else the usual CA checks
    (None; also for plain ws:// / http://)."""
    if not fingerprint or not url.lower().startswith(("wss://", "https://")):
        return None
    digest = fingerprint.replace(":", "").strip().lower()
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise MoltisError(
            f"the TLS fingerprint must be the certificate's SHA-256 in hex, not {fingerprint!r}"
        )
    return aiohttp.Fingerprint(raw)


def tls_failure(url: str, exc: BaseException) -> MoltisError | None:
    """A clear error for a TLS failure while connecting to `url` (None: not a TLS failure)."""
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return MoltisError(
            f"the certificate of {url} does not match the pinned fingerprint (expected "
            f"{exc.expected.hex()}, got {exc.got.hex()}): the gateway made a new certificate, "
            "or this is not your gateway"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return MoltisError(
            f"cannot verify the certificate of {url} ({exc}): the gateway's certificate is "
            "self-signed; pin it with --tls-fingerprint <sha256 hex> (env "
            "MOLTIS_TLS_FINGERPRINT; on the gateway's machine: `openssl x509 -noout "
            "-fingerprint -sha256 -in <state dir>/tls/cert.pem`)"
        )
    return None


START_HINT = (
    "Is it running? Start it with `moltis gateway` (or the app: `make run`, "
    "`moltis-desktop`), or point --url / MOLTIS_URL at it."
)
"""What to do when no gateway answers."""
SOCKET_URL = "ws://localhost"
"""The URL of the gateway on its owner socket (the socket carries it; `localhost` is only
the `Host` header, one the gateway's allowlist accepts)."""


def http_session(
    unix_socket: Path | None = None, timeout: aiohttp.ClientTimeout | None = None
) -> aiohttp.ClientSession:
    """An HTTP session to the gateway: over its owner socket when `unix_socket` is given."""
    connector = aiohttp.UnixConnector(path=str(unix_socket)) if unix_socket else None
    if timeout is None:
        return aiohttp.ClientSession(connector=connector)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


class GatewayClient:
    """One connection: challenge, `connect`, then `call(method, params)`. With
    `unix_socket`, over the gateway's owner socket (no credential needed: the gateway asks
    the kernel who is calling), else to `url`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        password: str | None = None,
        scopes: list[str] | None = None,
        timeout_s: float = 30.0,
        client_id: str = "cli",
        mode: str = "cli",
        tls_fingerprint: str | None = None,
        unix_socket: Path | None = None,
    ) -> None:
        self.unix_socket = unix_socket
        self.url = SOCKET_URL if unix_socket else url
        self.where = f"unix:{unix_socket}" if unix_socket else url
        """Where the gateway is, for messages."""
        self.ssl = tls_for(url, tls_fingerprint)
        self.token = token
        self.password = password
        self.scopes = scopes or ["operator.read"]
        self.timeout_s = timeout_s
        self.client_id = client_id
        self.mode = mode
        self.hello: dict[str, Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:12]

    async def __aenter__(self) -> GatewayClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _next_id(self) -> str:
        return f"{next(self._ids)}:{self._prefix}"

    async def connect(self) -> dict[str, Any]:
        """Open the socket and complete the handshake; returns the hello-ok payload."""
        self._session = http_session(self.unix_socket)
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=0,
                ssl=self.ssl if self.ssl is not None else True,
            )
        except (aiohttp.ClientError, OSError) as exc:
            await self.close()
            tls_error = tls_failure(self.url, exc)
            if tls_error is not None:
                raise tls_error from None
            raise GatewayUnreachableError(
                f"cannot reach the gateway at {self.where} ({exc}). {START_HINT}"
            ) from None
        try:
            challenge = await self._receive()
            if challenge.get("event") != "connect.challenge":
                raise MoltisError(
                    f"{self.where} does not speak the gateway protocol "
                    f"(first frame: {str(challenge)[:120]})"
                )
            auth: dict[str, str] = {}
            if self.token:
                auth["token"] = self.token
            if self.password:
                auth["password"] = self.password
            params = {
                "minProtocol": PROTOCOL_VERSION,
                "maxProtocol": PROTOCOL_VERSION,
                "client": {
                    "id": self.client_id,
                    "displayName": "moltis",
                    "version": __version__,
                    "platform": platform.system().lower() or "unknown",
                    "deviceFamily": platform.system() or "Unknown",
                    "mode": self.mode,
                    "instanceId": str(uuid.uuid4()),
                },
                "caps": [],
                "auth": auth,
                "role": "operator",
                "scopes": self.scopes,
            }
            self.hello = await self.call("connect", params)
        except BaseException:
            await self.close()
            raise
        return self.hello

    async def _receive(self) -> dict[str, Any]:
        assert self._ws is not None
        try:
            msg = await asyncio.wait_for(self._ws.receive(), self.timeout_s)
        except TimeoutError:
            raise MoltisError(
                f"the gateway at {self.where} did not answer within {self.timeout_s:g} s"
            ) from None
        if msg.type == aiohttp.WSMsgType.TEXT:
            frame: dict[str, Any] = json.loads(msg.data)
            return frame
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            code = self._ws.close_code
            raise GatewayUnreachableError(
                f"the gateway closed the connection ({code}"
                f"{': ' + str(msg.extra) if msg.extra else ''})"
            )
        raise MoltisError(f"unexpected WebSocket message from the gateway: {msg.type}")

    async def send_request(self, method: str, params: Any = None) -> str:
        """Send a request without waiting; returns its id (read the answer with `frames`)."""
        assert self._ws is not None
        rid = self._next_id()
        frame: dict[str, Any] = {"type": "req", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        await self._ws.send_str(json.dumps(frame))
        return rid

    async def frames(self, timeout_s: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every frame the gateway sends (events and answers), until the socket closes."""
        previous = self.timeout_s
        if timeout_s is not None:
            self.timeout_s = timeout_s
        try:
            while True:
                yield await self._receive()
        finally:
            self.timeout_s = previous

    async def call(self, method: str, params: Any = None) -> Any:
        """Send one request and return its payload (raises `GatewayRequestError`)."""
        rid = await self.send_request(method, params)
        while True:
            reply = await self._receive()
            if reply.get("type") == "res" and reply.get("id") == rid:
                break
        if not reply.get("ok"):
            raise GatewayRequestError(method, reply.get("error") or {})
        return reply.get("payload")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None
