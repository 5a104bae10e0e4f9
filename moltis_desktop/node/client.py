"""The node host's connection to a gateway: the signed handshake as role `node`, pairing with
a setup code, device tokens, reconnects with backoff, the tick watchdog, and answering
`node.invoke.request` with `node.invoke.result`.

Plain asyncio and aiohttp, so the CLI (`moltis node run`) and the desktop app can both run
it; the desktop app adds its own commands with `client.commands.register(name, handler)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from moltis_desktop.core.logging import REDACTOR
from moltis_desktop.node.backoff import Backoff
from moltis_desktop.node.commands import CommandError, NodeCommands
from moltis_desktop.node.errors import (
    NodeAuthError,
    NodeConfigError,
    NodeError,
    NodePairingPending,
    NodeRefusedError,
    NodeRequestError,
    NodeTlsError,
    NodeUnreachableError,
    refusal_error,
    removal_error,
)
from moltis_desktop.node.handshake import (
    ROLE,
    connect_params,
    device_family,
    next_frame,
    node_platform,
    read_challenge,
)
from moltis_desktop.node.identity import (
    IDENTITY_FILE,
    TOKENS_FILE,
    DeviceIdentity,
    NodeTokens,
    RoleToken,
)
from moltis_desktop.pairing.setupcode import SetupCode, SetupCodeError, check_url, decode

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

HANDSHAKE_TIMEOUT_S = 10.0
"""Seconds from opening the socket to `hello-ok` (the gateway's own limit is the same)."""
REQUEST_TIMEOUT_S = 30.0
PAIRING_POLL_CAP_S = 5.0
"""While waiting for approval, ask again at least this often (seconds): a person is
waiting for the node to come up once they approve it."""
DEFAULT_TICK_INTERVAL_MS = 30_000
TICK_TIMEOUT_CLOSE = 4000
MAX_FRAME_BYTES = 64 * 1024 * 1024


class _StoppedError(Exception):
    pass


def _normalise_pin(pin: str) -> str:
    text = pin.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise NodeConfigError(
            "the TLS fingerprint must be a SHA-256 in hex (64 digits); copy the setup code again"
        )
    return text


class NodeClient:
    """A node's connection to its gateway.

    `run()` keeps it connected until `stop()`; `connect_once()` + `serve()` are the steps
    it takes, for callers that want them one at a time. Where the gateway is comes from
    `setup_code`, or `url` (with `token`, the gateway's shared token), or else from what
    the state directory remembers of the last successful connection.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        setup_code: str | SetupCode | None = None,
        url: str | None = None,
        token: str | None = None,
        tls_sha256: str | None = None,
        display_name: str | None = None,
        allow_run: bool = False,
        commands: NodeCommands | None = None,
        say: Callable[[str], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.identity = DeviceIdentity.load_or_create(self.state_dir / IDENTITY_FILE)
        self.tokens = NodeTokens(self.state_dir / TOKENS_FILE)
        self.commands = commands if commands is not None else NodeCommands(allow_run=allow_run)
        self.display_name = display_name or socket.gethostname() or "moltis-node"
        self.instance_id = str(uuid.uuid4())
        self.platform = node_platform()
        self.device_family = device_family(self.platform)
        self._say = say or _LOGGER.info
        """Where the human lines go (connected, waiting for approval, retrying)."""
        self.backoff = backoff or Backoff()
        self.shared_token = token or None
        self.bootstrap_token: str | None = None
        urls, pin = self._gateway_from(setup_code, url, tls_sha256)
        REDACTOR.add(self.shared_token)
        REDACTOR.add(self.bootstrap_token)
        self.urls = urls
        self.tls_sha256 = _normalise_pin(pin) if pin else ""
        self.hello: dict[str, Any] = {}
        self.url = ""
        """The URL of the current (or last) connection."""
        self.connected = asyncio.Event()
        self.voicewake_triggers: list[str] = []
        self.event_listeners: list[Callable[[str, Any], None]] = []
        """Called with (event, payload) for every event the gateway sends."""
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()

    def _gateway_from(
        self, setup_code: str | SetupCode | None, url: str | None, tls_sha256: str | None
    ) -> tuple[list[str], str]:
        try:
            if setup_code is not None:
                code = decode(setup_code) if isinstance(setup_code, str) else setup_code
                self.bootstrap_token = code.bootstrap_token or None
                self.shared_token = self.shared_token or code.legacy_token or None
                return code.all_urls(), tls_sha256 or code.tls_sha256
            if url:
                check_url(url)
                same = url in (self.tokens.gateway_url, *self.tokens.urls)
                return [url], tls_sha256 or (self.tokens.tls_sha256 if same else "")
        except SetupCodeError as exc:
            raise NodeConfigError(str(exc)) from None
        stored = [u for u in (self.tokens.gateway_url, *self.tokens.urls) if u]
        return list(dict.fromkeys(stored)), tls_sha256 or self.tokens.tls_sha256

    # ------------------------------------------------------------------ state

    @property
    def node_id(self) -> str:
        """This node's device id (hex SHA-256 of its public key)."""
        return self.identity.device_id

    def _known_gateway(self, url: str) -> bool:
        return url in (self.tokens.gateway_url, *self.tokens.urls) and bool(url)

    def _credential(self, url: str) -> tuple[str, str]:
        """The `auth` field and value to send: this node's own token first, then the
        shared token, then the setup code's bootstrap token."""
        device_token = self.tokens.token_for(ROLE) if self._known_gateway(url) else None
        for field, value in (
            ("deviceToken", device_token),
            ("token", self.shared_token),
            ("bootstrapToken", self.bootstrap_token),
        ):
            if value:
                return field, value
        raise NodeAuthError(
            "NO_CREDENTIAL",
            "this node has no credential for the gateway: pair it with "
            "`moltis node run --pair <setup code>` (or use --url URL --token TOKEN)",
        )

    def _store_auth(self, url: str, auth: Any) -> None:
        self.tokens.set_gateway(url, self.urls, self.tls_sha256)
        if not isinstance(auth, dict):
            return
        grants: list[dict[str, Any]] = []
        if auth.get("deviceToken"):
            grants.append({**auth, "role": auth.get("role") or ROLE})
        grants += [g for g in auth.get("deviceTokens") or () if isinstance(g, dict)]
        for grant in grants:
            token, role = grant.get("deviceToken"), grant.get("role")
            if not isinstance(token, str) or not token or not isinstance(role, str):
                continue
            scopes = tuple(str(s) for s in grant.get("scopes") or ())
            issued = int(grant.get("issuedAtMs") or time.time() * 1000)
            self.tokens.put(role, RoleToken(token, scopes, issued))
            _LOGGER.info("stored a device token for role %s", role)

    # ------------------------------------------------------------------ connecting

    async def connect_once(self) -> dict[str, Any]:
        """Connect (trying each known URL in turn) and complete the handshake; returns the
        hello-ok payload. The connection stays open: call `serve()` to answer the gateway,
        or `close()`. Raises `NodePairingPending`, `NodeAuthError`, `NodeTlsError`,
        `NodeRefusedError` or `NodeUnreachableError`."""
        if not self.urls:
            raise NodeConfigError(
                "this node is not paired with a gateway yet: run "
                "`moltis node run --pair <setup code>` (or --url URL --token TOKEN)"
            )
        await self.close_connection()
        problems: list[str] = []
        tls_error: NodeTlsError | None = None
        for url in list(self.urls):
            try:
                hello = await self._connect_url(url)
            except NodeTlsError as exc:
                tls_error = exc
                problems.append(f"{url}: {exc}")
            except NodeUnreachableError as exc:
                problems.append(str(exc))
            else:
                # The address that worked is tried first next time.
                self.urls.remove(url)
                self.urls.insert(0, url)
                return hello
        if tls_error is not None:
            raise tls_error
        raise NodeUnreachableError("; ".join(problems))

    async def _connect_url(self, url: str) -> dict[str, Any]:
        try:
            return await self._handshake(url)
        except NodeAuthError as exc:
            if exc.credential != "deviceToken":
                raise
            # Revoked or the node was removed: forget the token, and use what this run was
            # given instead (a new setup code, the shared token), if anything.
            self.tokens.drop(ROLE)
            _LOGGER.warning("the gateway refused this node's device token: %s", exc)
            if self.shared_token or self.bootstrap_token:
                return await self._handshake(url)
            raise

    def _ssl_for(self, url: str) -> aiohttp.Fingerprint | bool:
        if url.startswith("wss://") and self.tls_sha256:
            # aiohttp turns verification off for a fingerprint (the gateway's certificate is
            # self-signed) and checks the DER SHA-256 of the peer's certificate instead.
            return aiohttp.Fingerprint(bytes.fromhex(self.tls_sha256))
        return True

    async def _open(self, url: str) -> aiohttp.ClientWebSocketResponse:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            return await self._session.ws_connect(
                url,
                ssl=self._ssl_for(url),
                max_msg_size=MAX_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                autoping=True,
            )
        except aiohttp.ServerFingerprintMismatch:
            raise NodeTlsError(
                f"the gateway at {url} presented a different TLS certificate than the setup "
                "code pins; refusing to connect (if the gateway's certificate was renewed, "
                "make a new setup code and run `moltis node run --pair <new code>`)"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise NodeUnreachableError(f"cannot reach the gateway at {url} ({exc})") from None

    async def _handshake(self, url: str) -> dict[str, Any]:
        field, secret = self._credential(url)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                ws = await self._open(url)
                try:
                    hello = await self._exchange(ws, url, field, secret)
                except BaseException:
                    await ws.close()
                    raise
        except TimeoutError:
            raise NodeUnreachableError(
                f"the gateway at {url} did not complete the handshake within "
                f"{HANDSHAKE_TIMEOUT_S:g} s"
            ) from None
        self._ws = ws
        self.url = url
        self.hello = hello
        self._store_auth(url, hello.get("auth"))
        self.connected.set()
        return hello

    async def _exchange(
        self, ws: aiohttp.ClientWebSocketResponse, url: str, field: str, secret: str
    ) -> dict[str, Any]:
        nonce, signed_at = read_challenge(await next_frame(ws, url), url)
        rid = self._next_id()
        params = connect_params(
            self.identity,
            self.commands,
            nonce=nonce,
            signed_at=signed_at,
            field=field,
            secret=secret,
            display_name=self.display_name,
            platform=self.platform,
            device_family=self.device_family,
            instance_id=self.instance_id,
        )
        await ws.send_str(
            json.dumps({"type": "req", "id": rid, "method": "connect", "params": params})
        )
        while True:
            frame = await next_frame(ws, url)
            if frame.get("type") == "res" and frame.get("id") == rid:
                break
        if frame.get("ok"):
            hello = frame.get("payload")
            return hello if isinstance(hello, dict) else {}
        raise refusal_error(frame.get("error") or {}, field)

    # ------------------------------------------------------------------ connected

    def _next_id(self) -> str:
        return f"{next(self._ids)}:{uuid.uuid4()}"

    async def _send(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise NodeUnreachableError("not connected to the gateway")
        async with self._send_lock:
            await ws.send_str(json.dumps(frame))

    async def request(
        self, method: str, params: Any = None, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> Any:
        """Send a request and wait for its answer (while `serve()` is reading); raises
        `NodeRequestError` on `ok: false`."""
        rid = self._next_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        frame: dict[str, Any] = {"type": "req", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        try:
            await self._send(frame)
            async with asyncio.timeout(timeout_s):
                reply = await future
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise NodeRequestError(method, reply.get("error") or {})
        return reply.get("payload")

    def _tick_timeout_s(self) -> float:
        policy = self.hello.get("policy") if isinstance(self.hello, dict) else None
        interval = policy.get("tickIntervalMs") if isinstance(policy, dict) else None
        if not isinstance(interval, int) or interval <= 0:
            interval = DEFAULT_TICK_INTERVAL_MS
        return 2 * interval / 1000

    async def serve(self) -> None:
        """Answer the gateway until the connection ends. Returns when it closed or went
        quiet (no frame for two tick intervals: closed with 4000); raises `NodeAuthError`
        when the gateway closed it because the node was removed or its token revoked."""
        ws = self._ws
        if ws is None:
            raise NodeUnreachableError("not connected to the gateway")
        reason = ""
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self._tick_timeout_s())
                except TimeoutError:
                    _LOGGER.warning("no tick from the gateway for %.0f s", self._tick_timeout_s())
                    await ws.close(code=TICK_TIMEOUT_CLOSE, message=b"tick timeout")
                    return
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                    continue
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    reason = str(msg.extra or "")
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    break
        finally:
            await self.close_connection()
        code = ws.close_code
        _LOGGER.info("the gateway closed the connection (%s %s)", code, reason)
        removed = removal_error(code, reason)
        if removed is not None:
            self.tokens.drop(ROLE)
            raise removed

    def _on_text(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            _LOGGER.warning("ignoring a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "res":
            future = self._pending.get(str(frame.get("id")))
            if future is not None and not future.done():
                future.set_result(frame)
            return
        if kind != "event":
            return
        event, payload = str(frame.get("event")), frame.get("payload")
        if event == "node.invoke.request" and isinstance(payload, dict):
            self._spawn(self._answer_invoke(payload))
        elif event == "voicewake.changed" and isinstance(payload, dict):
            triggers = payload.get("triggers")
            if isinstance(triggers, list):
                self.voicewake_triggers = [str(t) for t in triggers]
                _LOGGER.info("voice wake triggers: %s", ", ".join(self.voicewake_triggers))
        for listener in list(self.event_listeners):
            try:
                listener(event, payload)
            except Exception:
                _LOGGER.exception("an event listener failed on %s", event)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_invoke(self, payload: dict[str, Any]) -> None:
        invoke_id, command = payload.get("id"), payload.get("command")
        node_id = payload.get("nodeId") or self.node_id
        if not isinstance(invoke_id, str) or not isinstance(command, str):
            _LOGGER.warning("ignoring a node.invoke.request without id or command")
            return
        reply: dict[str, Any] = {"id": invoke_id, "nodeId": node_id}
        timeout_ms = payload.get("timeoutMs")
        timeout_s = timeout_ms / 1000 if isinstance(timeout_ms, int) and timeout_ms > 0 else None
        _LOGGER.info("invoke %s: %s", invoke_id[:12], command)
        try:
            raw = payload.get("paramsJSON")
            try:
                params = json.loads(raw) if isinstance(raw, str) and raw else payload.get("params")
            except ValueError:
                raise CommandError("INVALID_REQUEST", "paramsJSON is not JSON") from None
            try:
                async with asyncio.timeout(timeout_s):
                    result = await self.commands.invoke(command, params)
            except TimeoutError:
                raise CommandError(
                    "TIMEOUT", f"{command} did not finish within {timeout_ms} ms"
                ) from None
            reply.update(ok=True, payloadJSON=json.dumps(result))
        except CommandError as exc:
            reply.update(ok=False, error={"code": exc.code, "message": exc.message})
        try:
            await self.request("node.invoke.result", reply)
        except (NodeError, TimeoutError) as exc:
            _LOGGER.warning("could not send the result of %s: %s", command, exc)

    async def close_connection(self) -> None:
        """Close the current connection (if any); the node can connect again."""
        self.connected.clear()
        ws, self._ws = self._ws, None
        for task in list(self._tasks):
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(NodeUnreachableError("the connection to the gateway closed"))
        self._pending.clear()
        if ws is not None and not ws.closed:
            await ws.close()

    async def close(self) -> None:
        """Close the connection and the HTTP session."""
        await self.close_connection()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ running

    def stop(self) -> None:
        """Make `run()` return (safe to call from a signal handler on the loop)."""
        self._stop.set()

    async def _unless_stopped(self, coro: Awaitable[T]) -> T:
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopper):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending
        if not task.cancelled() and task.done():
            return task.result()
        raise _StoppedError

    async def run(self, *, once: bool = False) -> dict[str, Any] | None:
        """Stay connected until `stop()`: reconnect with backoff, wait for approval while
        pairing is pending. Raises on what retrying cannot fix (a dead credential, a wrong
        TLS certificate, a refusal). With `once`, return the hello-ok payload after the
        first successful handshake (and fail at once when no gateway answers)."""
        backoff = self.backoff
        backoff.reset()
        announced: set[str] = set()
        try:
            while not self._stop.is_set():
                try:
                    hello = await self._unless_stopped(self.connect_once())
                except NodePairingPending as exc:
                    if exc.request_id not in announced:
                        announced.add(exc.request_id)
                        self._say(str(exc))
                    delay = backoff.next(PAIRING_POLL_CAP_S)
                except NodeUnreachableError as exc:
                    if once:
                        raise
                    delay = backoff.next()
                    self._say(f"{exc}; trying again in {delay:.0f} s")
                except NodeAuthError:
                    raise
                except NodeRefusedError as exc:
                    if exc.retry_after_ms is None:
                        raise
                    delay = max(backoff.next(), exc.retry_after_ms / 1000)
                    self._say(f"{exc}; trying again in {delay:.0f} s")
                else:
                    backoff.reset()
                    self._say(
                        f"connected to {self.url} as node {self.node_id[:12]} "
                        f"(commands: {', '.join(self.commands.names()) or 'none'})"
                    )
                    if once:
                        return hello
                    await self._unless_stopped(self.serve())
                    delay = backoff.next()
                    self._say(f"disconnected from the gateway; reconnecting in {delay:.0f} s")
                await self._unless_stopped(asyncio.sleep(delay))
        except _StoppedError:
            pass
        finally:
            await self.close()
        return None
