"""Admitting a connection: the `connect` request checked the way OpenClaw's gateway does.

Order: params, protocol, role, origin, shared secret (with throttling), device proof, then
the scopes the connection gets. Each credential is checked in its own module under
`gateway/admission/` (shared secret, device token, setup code's bootstrap token); this one
decides which applies.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from moltis_desktop.gateway.admission.bootstrap_token import admit_bootstrap
from moltis_desktop.gateway.admission.common import (
    Admission,
    HandshakeRejectedError,
    HandshakeRequest,
    check_device,
)
from moltis_desktop.gateway.admission.device_pairing import require_paired
from moltis_desktop.gateway.admission.device_token import (
    admit_device_token,
    device_token_error,
    device_token_scopes,
)
from moltis_desktop.gateway.admission.shared_secret import check_shared_secret, pairing_check
from moltis_desktop.gateway.trust import check_origin
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
)
from moltis_desktop.protocol.frames import ErrorShape

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState

_BROWSER_CLIENTS = frozenset(
    {
        "openclaw-control-ui",
        "webchat-ui",
        "webchat",
        "openclaw-browser-copilot",
        "moltbot-control-ui",
    }
)


def admit(state: GatewayState, raw_params: Any, req: HandshakeRequest) -> Admission:
    """Decide on a `connect`; raise `HandshakeRejectedError` with the answer OpenClaw gives."""
    try:
        params = parse_connect_params(raw_params)
    except ConnectParamsError as exc:
        raise HandshakeRejectedError(ErrorShape(ErrorCode.INVALID_REQUEST, str(exc))) from None
    admission = _admit(state, params, req)
    if admission.role != Role.NODE:
        return admission
    surface = {
        "caps": list(params.caps),
        "commands": list(params.commands or ()),
        "permissions": dict(params.permissions or {}),
        "pathEnv": params.path_env,
    }
    return dataclasses.replace(admission, node_surface=surface)


def _admit(state: GatewayState, params: ConnectParams, req: HandshakeRequest) -> Admission:
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
    settings = state.settings.gateway
    local = req.local
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
    if not local and not settings.tls.enabled and _public_address(req.remote_ip):
        _LOGGER.warning("connect from public address %s refused: TLS is off", req.remote_ip)
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST,
                "connections from outside the local network need TLS (turn on gateway.tls.enabled "
                "and use wss://)",
                {"code": "TLS_REQUIRED"},
            )
        )
    auth = params.auth
    has_secret = bool(auth and (auth.token or auth.password))
    if auth and auth.bootstrap_token and not has_secret:
        return admit_bootstrap(state, params, req, protocol)
    if auth and auth.device_token and not has_secret:
        return admit_device_token(state, params, req, protocol)
    token_scopes: tuple[str, ...] | None = None
    try:
        # An operator over the owner socket is the owner: the kernel has checked its uid,
        # which is what holding the token proves on TCP. (A node still pairs, below.)
        if not (req.owner and params.role == Role.OPERATOR):
            check_shared_secret(state, params, req, browser)
    except HandshakeRejectedError:
        # Not the shared secret: maybe this device's own token (a paired device).
        if params.device is None or not (auth and auth.token):
            raise
        token_scopes = device_token_scopes(state, params, req)
        if token_scopes is None:
            if state.pairing.has_token(params.device.id, params.role):
                raise device_token_error(params) from None
            raise
    device_id = check_device(state, params, req)
    client = client_dict(params)
    issued = None
    if device_id is not None and token_scopes is not None:
        require_paired(
            state, params, req, device_id, (params.role,), requested, token_scopes=token_scopes
        )
    elif device_id is not None:
        issued = pairing_check(state, params, req, device_id, requested)
    if token_scopes is not None:
        granted = requested if requested else token_scopes
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
        # an allowed Origin above; auth mode `none` admits loopback only.) A client on the
        # owner socket is the same: the owner, with the scopes it asks for.
        scopes = requested
    return Admission(protocol, params.role, scopes, client, device_id, issued)


def _public_address(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_private or addr.is_loopback or addr.is_link_local)
