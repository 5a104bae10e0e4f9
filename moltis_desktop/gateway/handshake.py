"""Admitting a connection: the `connect` request checked the way OpenClaw's gateway does.

Order: params, protocol, role, origin, shared secret (with throttling), device proof, then
the scopes the connection gets.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from moltis_desktop.gateway.auth import is_loopback
from moltis_desktop.pairing.identity import DeviceProofError, SignedConnect, verify_device_proof
from moltis_desktop.protocol.connect import (
    ConnectParams,
    ConnectParamsError,
    client_dict,
    negotiate,
    parse_connect_params,
)
from moltis_desktop.protocol.constants import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
    Role,
    Scope,
)
from moltis_desktop.protocol.frames import ErrorShape

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from moltis_desktop.gateway.server import GatewayServer

_CLOSE_REASON_MAX_BYTES = 120
_BROWSER_CLIENTS = frozenset(
    {
        "openclaw-control-ui",
        "webchat-ui",
        "webchat",
        "openclaw-browser-copilot",
        "moltbot-control-ui",
    }
)


class HandshakeRejectedError(Exception):
    """The connect is refused: answer with `error` (when there is a request id), then close."""

    def __init__(
        self,
        error: ErrorShape,
        close_code: int = CloseCode.POLICY_VIOLATION,
        close_reason: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.close_code = close_code
        self.close_reason = truncate_reason(
            close_reason if close_reason is not None else error.message
        )
        self.delay_s = delay_s


def truncate_reason(reason: str) -> str:
    """A close reason cut to the 120 bytes a close frame can carry (on a character edge)."""
    data = reason.encode("utf-8")[:_CLOSE_REASON_MAX_BYTES]
    return data.decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class Admission:
    """An accepted connect."""

    protocol: int
    role: str
    scopes: tuple[str, ...]
    client: dict[str, Any]
    device_id: str | None
    issued: Any = None
    """A device token issued by this connect (`pairing.store.Issued`), for `hello-ok`."""


@dataclass(frozen=True)
class HandshakeRequest:
    """What the gateway knows about the connecting socket."""

    remote_ip: str
    origin: str | None
    host_header: str | None
    nonce: str


def _auth_error(
    reason: str, params: ConnectParams, local: bool, retry_after_ms: int | None = None
) -> ErrorShape:
    token_hint = (
        "get it with `moltis secrets get gateway-token` on the gateway's machine"
        if params.client.mode == "cli" and local
        else "provide the gateway auth token"
    )
    password_hint = "use this gateway's password (gateway.auth.password_secret)"
    messages = {
        "token_missing": f"unauthorized: gateway token missing ({token_hint})",
        "token_mismatch": f"unauthorized: gateway token mismatch ({token_hint} or pair the device)",
        "password_missing": f"unauthorized: gateway password missing ({password_hint})",
        "password_mismatch": f"unauthorized: gateway password mismatch ({password_hint})",
        "not_configured": "unauthorized: gateway token not configured on gateway (run "
        "`moltis secrets set gateway-token` or set MOLTIS_TOKEN)",
        "rate_limited": "unauthorized: too many failed authentication attempts (retry later)",
        "loopback_only": "unauthorized: this gateway has auth mode `none` and accepts only "
        "loopback clients (set gateway.auth.mode to `token`)",
    }
    detail_codes = {
        "token_missing": "AUTH_TOKEN_MISSING",
        "token_mismatch": "AUTH_TOKEN_MISMATCH",
        "password_missing": "AUTH_PASSWORD_MISSING",
        "password_mismatch": "AUTH_PASSWORD_MISMATCH",
        "rate_limited": "AUTH_RATE_LIMITED",
    }
    if reason.endswith("_missing") or reason == "not_configured":
        next_step = "update_auth_configuration"
    elif reason.endswith("_mismatch"):
        next_step = "update_auth_credentials"
    elif reason == "rate_limited":
        next_step = "wait_then_retry"
    else:
        next_step = "review_auth_configuration"
    details = {
        "code": detail_codes.get(reason, "AUTH_UNAUTHORIZED"),
        "authReason": reason,
        "canRetryWithDeviceToken": False,
        "recommendedNextStep": next_step,
    }
    return ErrorShape(
        ErrorCode.INVALID_REQUEST,
        messages.get(reason, f"unauthorized: {reason}"),
        details,
        retryable=True if retry_after_ms else None,
        retry_after_ms=retry_after_ms,
    )


def _trusted_host(host: str, local: bool) -> bool:
    host = host.strip("[]").lower()
    if host.endswith((".local", ".ts.net")) or host == "localhost":
        return host != "localhost" or local
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (addr.is_loopback and local) or addr.is_private or addr.is_link_local


def origin_listed(normalized: str, allowed: tuple[str, ...]) -> bool:
    """Whether a normalised (`scheme://host[:port]`, lower case) origin is in `allowed`
    (`gateway.cors.allowed_origins`; `*` allows any)."""
    return "*" in allowed or normalized in {a.rstrip("/").lower() for a in allowed}


def check_origin(
    origin: str | None, host_header: str | None, local: bool, allowed: tuple[str, ...]
) -> str | None:
    """None when a browser page at `origin` may use this gateway, else why not."""
    if not origin or origin == "null":
        return "origin missing or invalid"
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "origin missing or invalid"
    normalized = f"{parts.scheme}://{parts.netloc}".lower()
    if origin_listed(normalized, allowed):
        return None
    origin_host = parts.netloc.lower()
    if host_header and origin_host == host_header.lower() and _trusted_host(parts.hostname, local):
        return None
    if local and (parts.hostname == "localhost" or is_loopback(parts.hostname)):
        return None
    return "origin not allowed"


def admit(server: GatewayServer, raw_params: Any, req: HandshakeRequest) -> Admission:
    """Decide on a `connect`; raise `HandshakeRejectedError` with the answer OpenClaw gives."""
    try:
        params = parse_connect_params(raw_params)
    except ConnectParamsError as exc:
        raise HandshakeRejectedError(ErrorShape(ErrorCode.INVALID_REQUEST, str(exc))) from None
    protocol = negotiate(params.min_protocol, params.max_protocol)
    if protocol is None:
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST,
                "protocol mismatch",
                {
                    "code": "PROTOCOL_MISMATCH",
                    "clientMinProtocol": params.min_protocol,
                    "clientMaxProtocol": params.max_protocol,
                    "expectedProtocol": PROTOCOL_VERSION,
                    "minimumProbeProtocol": MIN_PROTOCOL_VERSION,
                },
            ),
            CloseCode.PROTOCOL_ERROR,
            "protocol mismatch",
        )
    if params.role not in (Role.OPERATOR, Role.NODE):
        raise HandshakeRejectedError(ErrorShape(ErrorCode.INVALID_REQUEST, "invalid role"))
    settings = server.settings.gateway
    local = is_loopback(req.remote_ip)
    browser = req.origin is not None or params.client.id in _BROWSER_CLIENTS
    if browser:
        why = check_origin(req.origin, req.host_header, local, settings.cors.allowed_origins)
        if why is not None:
            raise HandshakeRejectedError(
                ErrorShape(
                    ErrorCode.INVALID_REQUEST,
                    "origin not allowed (open the web UI from the gateway's own address or add the "
                    "origin to gateway.cors.allowed_origins)",
                    {"code": "CONTROL_UI_ORIGIN_NOT_ALLOWED", "reason": why},
                )
            )
    requested = tuple(params.scopes or ())
    token_scopes: tuple[str, ...] | None = None
    try:
        _check_shared_secret(server, params, req, local, browser)
    except HandshakeRejectedError:
        # Not the shared secret: maybe this device's own token (a paired device).
        token_scopes = _device_token_scopes(server, params, req)
        if token_scopes is None:
            raise
    device_id = _check_device(params, req, server.clock.now_ms())
    client = client_dict(params)
    issued = None
    if device_id is not None and token_scopes is None:
        issued = _pairing_check(server, params, req, device_id, local, requested)
    if token_scopes is not None:
        granted = tuple(s for s in requested if s in token_scopes) if requested else token_scopes
        return Admission(protocol, params.role, granted, client, device_id)
    if params.role == Role.NODE:
        scopes: tuple[str, ...] = ()
    elif params.client.mode == "probe":
        # Probes only check that a gateway answers (OpenClaw grants them nothing either).
        scopes = ()
    else:
        # A client holding the shared secret (token or password) is the owner's own tool,
        # whether it is local, on the LAN or the web app: OpenClaw lets a token-authenticated
        # client skip device identity and keep its declared scopes. (Browsers were held to
        # an allowed Origin above; auth mode `none` admits loopback only.)
        scopes = requested
    return Admission(protocol, params.role, scopes, client, device_id, issued)


def _device_token_scopes(
    server: GatewayServer, params: ConnectParams, req: HandshakeRequest
) -> tuple[str, ...] | None:
    """The scopes of the device token this connect carries (with a valid device proof)."""
    auth = params.auth
    token = (auth.device_token or auth.token or "") if auth else ""
    if params.device is None or not token:
        return None
    device_id = _check_device(params, req, server.clock.now_ms())
    if device_id is None:
        return None
    scopes = server.pairing.check_token(device_id, params.role, token)
    _LOGGER.info(
        "device %s: device token %s for role %s",
        device_id[:12],
        "accepted" if scopes is not None else "refused",
        params.role,
    )
    return scopes


def _pairing_check(  # noqa: PLR0917 - one call site, all of it the connect's state
    server: GatewayServer,
    params: ConnectParams,
    req: HandshakeRequest,
    device_id: str,
    local: bool,
    requested: tuple[str, ...],
) -> Any:
    """A device with the shared secret must be paired (loopback ones are, silently); a
    paired device without a token for its role gets one (returned, for `hello-ok`)."""
    assert params.device is not None
    store = server.pairing
    role = params.role
    if not store.is_paired(device_id, params.device.public_key, role, requested):
        device = {
            "deviceId": device_id,
            "publicKey": params.device.public_key,
            "displayName": params.client.display_name or params.client.id,
            "platform": params.client.platform,
            "clientId": params.client.id,
            "clientMode": params.client.mode,
            "role": role,
            "roles": [role],
            "scopes": list(requested),
            "remoteIp": req.remote_ip,
        }
        if local and server.settings.gateway.auto_approve_loopback_devices:
            store.approve_directly(device)
            _LOGGER.info("device %s paired silently (loopback) as %s", device_id[:12], role)
            server.broadcast(
                "device.pair.resolved",
                {"requestId": None, "deviceId": device_id, "decision": "approved",
                 "ts": server.clock.now_ms()},
                scope=Scope.PAIRING,
            )  # fmt: skip
        else:
            entry, new = store.request(device)
            _LOGGER.info(
                "device %s asks to pair as %s from %s (request %s)",
                device_id[:12],
                role,
                req.remote_ip,
                entry["requestId"],
            )
            if new:
                server.broadcast("device.pair.requested", entry, scope=Scope.PAIRING)
            raise HandshakeRejectedError(
                ErrorShape(
                    ErrorCode.NOT_PAIRED,
                    "pairing required",
                    {"code": "PAIRING_REQUIRED", "requestId": entry["requestId"]},
                ),
                CloseCode.POLICY_VIOLATION,
                "pairing required",
            )
    if store.has_token(device_id, role):
        return None
    return store.issue(device_id, role, requested)


def _check_shared_secret(
    server: GatewayServer, params: ConnectParams, req: HandshakeRequest, local: bool, browser: bool
) -> None:
    secret = server.shared_secret
    auth = params.auth
    token = auth.token if auth else None
    password = auth.password if auth else None
    if secret.mode == "none":
        if not local:
            raise HandshakeRejectedError(_auth_error("loopback_only", params, local))
        return
    if not token and not password and params.device is None:
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.NOT_PAIRED,
                "device identity required",
                {"code": "DEVICE_IDENTITY_REQUIRED"},
            )
        )
    throttle = server.browser_throttle if browser else server.auth_throttle
    key = f"origin:{req.origin}" if browser and local and req.origin else req.remote_ip
    retry_after = throttle.retry_after_ms(key)
    if retry_after is not None:
        raise HandshakeRejectedError(_auth_error("rate_limited", params, local, retry_after))
    # The field matching the mode is preferred, and the other one is tried in its place:
    # the OpenClaw CLI sends whichever it was given.
    given = (token or password) if secret.mode == "token" else (password or token)
    reason = secret.check(given)
    if reason is not None:
        delay = throttle.record_failure(key)
        raise HandshakeRejectedError(_auth_error(reason, params, local), delay_s=delay)
    throttle.record_success(key)


def _check_device(params: ConnectParams, req: HandshakeRequest, now_ms: int) -> str | None:
    device = params.device
    if device is None:
        return None
    auth = params.auth
    token = (auth.token or auth.device_token or auth.bootstrap_token or "") if auth else ""
    proof = SignedConnect(
        device_id=device.id,
        public_key=device.public_key,
        signature=device.signature,
        signed_at=device.signed_at,
        nonce=device.nonce,
        client_id=params.client.id,
        client_mode=params.client.mode,
        role=params.role,
        scopes=tuple(params.scopes or ()),
        token=token,
        platform=params.client.platform,
        device_family=params.client.device_family or "",
    )
    try:
        verify_device_proof(proof, challenge_nonce=req.nonce, now_ms=now_ms)
    except DeviceProofError as exc:
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST, exc.message, {"code": exc.code, "reason": exc.message}
            )
        ) from None
    return device.id
