"""The WebSocket side of the gateway: challenge, handshake, then the request loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import security_event
from moltis_desktop.gateway.admission.common import (
    Admission,
    HandshakeRejectedError,
    HandshakeRequest,
)
from moltis_desktop.gateway.broadcast import CAPABILITIES
from moltis_desktop.gateway.canvas_access import request_base_url
from moltis_desktop.gateway.connection import Connection
from moltis_desktop.gateway.context import MethodContext
from moltis_desktop.gateway.handshake import admit
from moltis_desktop.gateway.http_security import OWNER_ADDRESS, client
from moltis_desktop.gateway.limits import is_owner, mark_authenticated
from moltis_desktop.gateway.registry import (
    MethodSpec,
    convert_params,
    forbidden,
    missing_scope,
    operator_may,
)
from moltis_desktop.gateway.state import GatewayState
from moltis_desktop.protocol.constants import PREAUTH_MAX_PAYLOAD, CloseCode, ErrorCode, Role, Scope
from moltis_desktop.protocol.frames import (
    INVALID_REQUEST_ID,
    ErrorShape,
    FrameError,
    GatewayError,
    RequestFrame,
    decode_json,
    decode_request,
    encode_error,
    encode_event_body,
    encode_json,
    encode_ok,
)
from moltis_desktop.sessions.keys import main_session_key

_LOGGER = logging.getLogger(__name__)

MAX_PREAUTH_SOCKETS_PER_IP = 32
"""Connections one IP may have open before their handshake completes."""
_YIELD_EVERY = 32
"""Frames handled back to back before letting other connections run (fairness under floods)."""
_UNAUTHORIZED_ROLE_LIMIT = 10
_HEARTBEAT_S = 25.0


async def websocket_handler(gateway: GatewayState, request: web.Request) -> web.StreamResponse:
    """Serve one WebSocket client from upgrade to close."""
    ip = OWNER_ADDRESS if is_owner(request) else (request.remote or "")
    if gateway.draining:
        return web.Response(status=503, text="gateway is shutting down\n")
    if gateway.preauth[ip] >= MAX_PREAUTH_SOCKETS_PER_IP:
        return web.Response(status=503, text="Too many unauthenticated sockets\n")
    settings = gateway.settings.gateway
    # aiohttp drops the TCP connection without a close frame when its own limit trips, so
    # its limit sits above ours: frames up to twice the policy get a proper 1009 from us.
    ws = web.WebSocketResponse(
        compress=False,
        max_msg_size=2 * max(settings.max_payload, PREAUTH_MAX_PAYLOAD),
        heartbeat=_HEARTBEAT_S,
        protocols=_offered_protocols(request),
    )
    gateway.preauth[ip] += 1
    try:
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        conn = Connection(
            ws,
            transport,
            conn_id=str(uuid.uuid4()),
            remote_ip=ip,
            max_buffered=settings.max_buffered_bytes,
            max_payload=settings.max_payload,
            inflight=settings.max_inflight_per_connection,
        )
        admission = await _handshake(gateway, conn, request)
    finally:
        gateway.preauth[ip] -= 1
        if gateway.preauth[ip] <= 0:
            del gateway.preauth[ip]
    if admission is None:
        return ws
    mark_authenticated(request)
    _register(gateway, conn, admission)
    try:
        await _serve(gateway, conn)
    finally:
        _unregister(gateway, conn)
        await conn.closed()
        await conn.release()
    return ws


def _offered_protocols(request: web.Request) -> tuple[str, ...]:
    # Echo a requested subprotocol, as OpenClaw's server (the `ws` library) does.
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(p.strip() for p in offered.split(",") if p.strip())[:1]


async def _handshake(
    gateway: GatewayState, conn: Connection, request: web.Request
) -> Admission | None:
    nonce, ts = str(uuid.uuid4()), gateway.clock.now_ms()
    conn.send(encode_event_body("connect.challenge", {"nonce": nonce, "ts": ts}))
    timeout_s = gateway.settings.gateway.handshake_timeout_ms / 1000
    try:
        async with asyncio.timeout(timeout_s):
            msg = await conn.ws.receive()
    except TimeoutError:
        _LOGGER.info("handshake timeout", extra={"conn": conn.conn_id[:8], "ip": conn.remote_ip})
        await conn.close(CloseCode.POLICY_VIOLATION, "handshake timeout")
        return None
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None
    if msg.type != WSMsgType.TEXT:
        await conn.close(CloseCode.POLICY_VIOLATION, "invalid request frame")
        return None
    data = msg.data
    if len(data) > PREAUTH_MAX_PAYLOAD:
        await conn.close(CloseCode.MESSAGE_TOO_BIG, "preauth payload too large")
        return None
    try:
        frame = decode_request(data)
    except FrameError as exc:
        await conn.close(CloseCode.POLICY_VIOLATION, exc.close_reason)
        return None
    if frame.method != "connect":
        message = "invalid handshake: first request must be connect"
        conn.send(encode_error(frame.id, ErrorShape(ErrorCode.INVALID_REQUEST, message)))
        await conn.close(CloseCode.POLICY_VIOLATION, message)
        return None
    ip, local = client(request)
    hs = HandshakeRequest(
        remote_ip=ip,
        local=local,
        owner=is_owner(request),
        origin=request.headers.get("Origin"),
        host_header=request.headers.get("Host"),
        nonce=nonce,
    )
    try:
        admission = admit(gateway, frame.params, hs)
    except HandshakeRejectedError as rejected:
        if rejected.delay_s:
            await asyncio.sleep(rejected.delay_s)
        # Both logs, once a minute per address and reason (then a count): no flood.
        security_event("connect.refused", ip=ip, reason=rejected.error.message)
        conn.send(encode_error(frame.id, rejected.error))
        await conn.close(rejected.close_code, rejected.close_reason)
        return None
    base_url = request_base_url(request, gateway.http_url)
    conn.send(encode_ok(frame.id, _hello(gateway, conn, admission, base_url)))
    return admission


def _hello(
    gateway: GatewayState, conn: Connection, admission: Admission, base_url: str
) -> dict[str, Any]:
    settings = gateway.settings
    reads = operator_may(admission.role, frozenset(admission.scopes), Scope.READ)
    default_agent = settings.agents.default
    main_key = settings.session.main_key
    return {
        "type": "hello-ok",
        "protocol": admission.protocol,
        "server": {"version": gateway.version, "bootId": gateway.boot_id, "connId": conn.conn_id},
        "features": {
            "methods": gateway.methods_advertised,
            "events": gateway.events_advertised,
            "capabilities": list(CAPABILITIES),
        },
        "snapshot": {
            "presence": gateway.presence.entries() if reads else [],
            "health": gateway.health.snapshot_raw(),
            "stateVersion": gateway.state_version(),
            "uptimeMs": gateway.uptime_ms(),
            "configPath": str(gateway.config.path),
            "stateDir": str(gateway.state_dir),
            "authMode": gateway.shared_secret.mode,
            "sessionDefaults": {
                "defaultAgentId": default_agent,
                "mainKey": main_key,
                "mainSessionKey": main_session_key(default_agent, main_key),
                "scope": "per-sender",
            },
        },
        **_surface_urls(gateway, admission, base_url),
        "auth": _auth_block(admission),
        "policy": {
            "maxPayload": settings.gateway.max_payload,
            "maxBufferedBytes": settings.gateway.max_buffered_bytes,
            "tickIntervalMs": settings.gateway.tick_interval_ms,
        },
    }


def _surface_urls(gateway: GatewayState, admission: Admission, base_url: str) -> dict[str, Any]:
    """The canvas's capability URL on the address this client reached us by, for an operator
    that may read (not for a node, a probe or a pairing-only client): protocol 4's
    `pluginSurfaceUrls.canvas`, protocol 3's `canvasHostUrl`."""
    if not operator_may(admission.role, frozenset(admission.scopes), Scope.READ):
        return {}
    canvas = gateway.canvas.url(base_url)
    if admission.protocol >= 4:
        return {"pluginSurfaceUrls": {"canvas": canvas}}
    return {"canvasHostUrl": canvas}


def _register(gateway: GatewayState, conn: Connection, admission: Admission) -> None:
    conn.role = admission.role
    conn.scopes = frozenset(admission.scopes)
    conn.device_id = admission.device_id
    gateway.connections.add(conn)
    _LOGGER.debug(
        "client connected",
        extra={
            "conn": conn.conn_id[:8],
            "client": admission.client.get("id"),
            "mode": admission.client.get("mode"),
            "role": conn.role,
            "ip": conn.remote_ip,
        },
    )
    if gateway.presence.client_connected(
        conn.conn_id,
        admission.client,
        ip=conn.remote_ip,
        role=conn.role,
        scopes=list(conn.scopes),
        device_id=admission.device_id,
    ):
        gateway.broadcast_presence()
    if admission.role == Role.NODE:
        gateway.nodes.connected(
            conn,
            client=admission.client,
            device_id=admission.device_id,
            surface=admission.node_surface,
        )


def _unregister(gateway: GatewayState, conn: Connection) -> None:
    gateway.connections.discard(conn)
    if conn.role == Role.NODE:
        gateway.nodes.disconnected(conn)
    for task in list(conn.tasks):
        task.cancel()
    if gateway.presence.client_disconnected(conn.conn_id):
        gateway.broadcast_presence()


async def _serve(gateway: GatewayState, conn: Connection) -> None:
    ws = conn.ws
    streak = 0
    unauthorized = [0]
    while not conn.closing:
        msg = await ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and len(msg.data) > conn.max_payload:
            await conn.close(CloseCode.MESSAGE_TOO_BIG, "payload too large")
            return
        if msg.type == WSMsgType.TEXT:
            try:
                frame = decode_request(msg.data)
            except FrameError as exc:
                conn.send(
                    encode_error(exc.request_id, ErrorShape(ErrorCode.INVALID_REQUEST, exc.message))
                )
            else:
                await _dispatch(gateway, conn, frame, unauthorized)
        elif msg.type == WSMsgType.BINARY:
            conn.send(
                encode_error(
                    INVALID_REQUEST_ID,
                    ErrorShape(
                        ErrorCode.INVALID_REQUEST,
                        "invalid request frame: binary frames are not supported; send JSON text",
                    ),
                )
            )
        else:
            return
        streak += 1
        if streak >= _YIELD_EVERY:
            streak = 0
            await asyncio.sleep(0)


def _refuse(
    conn: Connection, frame: RequestFrame, spec: MethodSpec | None
) -> tuple[GatewayError | None, bool]:
    """Why the call is refused (None when it is not), and whether it was for the role."""
    # Authorisation comes before the lookup, as in OpenClaw: an unknown method needs admin.
    if frame.method == "health":
        return None, False
    role_ok = conn.role in spec.roles if spec is not None else conn.role == Role.OPERATOR
    if not role_ok:
        return GatewayError.invalid(f"unauthorized role: {conn.role}"), True
    if spec is not None:
        return missing_scope(spec, conn.role, conn.scopes), False
    if Scope.ADMIN not in conn.scopes:
        return forbidden(Scope.ADMIN), False
    return GatewayError.invalid(f"unknown method: {frame.method}"), False


async def _dispatch(
    gateway: GatewayState, conn: Connection, frame: RequestFrame, unauthorized: list[int]
) -> None:
    spec = gateway.methods.get(frame.method)
    error, for_role = _refuse(conn, frame, spec)
    if error is not None:
        conn.send(encode_error(frame.id, error.shape))
        if for_role:
            unauthorized[0] += 1
            if unauthorized[0] > _UNAUTHORIZED_ROLE_LIMIT:
                conn.close_soon(CloseCode.POLICY_VIOLATION, "repeated unauthorized calls")
        else:
            unauthorized[0] = 0
        return
    unauthorized[0] = 0
    assert spec is not None
    ctx = MethodContext(gateway, conn, frame.id)
    if spec.dedupe or spec.is_async:
        await conn.inflight.acquire()
        task = asyncio.get_running_loop().create_task(_run_async(ctx, spec, frame.params))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)
        return
    try:
        result = spec.handler(ctx, convert_params(spec, frame.params))
    except (GatewayError, MoltisError) as exc:
        error = _gateway_error(exc)
        conn.send(encode_error(frame.id, error.shape, error.payload))
    except Exception:
        _LOGGER.exception("method %s failed", frame.method)
        conn.send(encode_error(frame.id, _internal_error(frame.method)))
    else:
        conn.send(encode_ok(frame.id, result))


def _gateway_error(exc: GatewayError | MoltisError) -> GatewayError:
    # A MoltisError's message says what to do: the caller gets it as an invalid request,
    # whichever method raised it, rather than an "internal error".
    return exc if isinstance(exc, GatewayError) else GatewayError.invalid(exc.message)


def _internal_error(method: str) -> ErrorShape:
    return ErrorShape(
        ErrorCode.UNAVAILABLE,
        f"internal error in {method}; the gateway log has the details (`moltis call logs.tail`)",
    )


async def _run_async(ctx: MethodContext, spec: MethodSpec, raw_params: Any) -> None:
    conn = ctx.conn
    key: str | None = None
    try:
        params = convert_params(spec, raw_params)
        key = _idempotency_key(spec, raw_params)
        if key is not None:
            earlier = ctx.state.dedupe.claim(spec.name, key)
            if earlier is not None:
                conn.send(_replay(ctx.request_id, await earlier))
                return
        result = spec.handler(ctx, params)
        if spec.is_async:
            result = await result
        data = encode_ok(ctx.request_id, result)
        conn.send(data)
        if key is not None:
            ctx.state.dedupe.resolve(spec.name, key, data)
    except (GatewayError, MoltisError) as exc:
        error = _gateway_error(exc)
        data = encode_error(ctx.request_id, error.shape, error.payload)
        conn.send(data)
        if key is not None:
            ctx.state.dedupe.resolve(spec.name, key, data)
    except asyncio.CancelledError:
        if key is not None:
            ctx.state.dedupe.forget(spec.name, key)
        raise
    except Exception:
        _LOGGER.exception("method %s failed", spec.name)
        conn.send(encode_error(ctx.request_id, _internal_error(spec.name)))
        if key is not None:
            ctx.state.dedupe.forget(spec.name, key)
    finally:
        conn.inflight.release()


def _idempotency_key(spec: MethodSpec, raw_params: Any) -> str | None:
    if not spec.dedupe or not isinstance(raw_params, dict):
        return None
    key = raw_params.get("idempotencyKey")
    return key if isinstance(key, str) and key else None


def _replay(request_id: str, encoded: bytes) -> bytes:
    # The first answer, re-addressed to this request's id.
    frame = decode_json(encoded)
    frame["id"] = request_id
    return encode_json(frame)


def _auth_block(admission: Admission) -> dict[str, Any]:
    """`hello-ok.auth`: the role and scopes, and a device token when this connect got one
    (the only time its value is sent; the gateway keeps only a hash)."""
    block: dict[str, Any] = {"role": admission.role, "scopes": list(admission.scopes)}
    if admission.issued is not None:
        block["deviceToken"] = admission.issued.token
        block["issuedAtMs"] = admission.issued.issued_at_ms
    if admission.issued_all:
        block["deviceTokens"] = [
            {
                "deviceToken": issued.token,
                "role": issued.role,
                "scopes": list(issued.scopes),
                "issuedAtMs": issued.issued_at_ms,
            }
            for issued in admission.issued_all
        ]
    return block
