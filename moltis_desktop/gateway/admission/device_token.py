"""The device token: a paired device connecting with its own per-role token (in
`auth.deviceToken`, or in `auth.token` where the shared secret does not match), with its
device proof; asking for more scopes than the token carries is a scope upgrade."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from moltis_desktop.gateway.admission.common import (
    Admission,
    HandshakeRejectedError,
    HandshakeRequest,
    check_device,
    throttled,
)
from moltis_desktop.gateway.admission.device_pairing import require_paired
from moltis_desktop.protocol.connect import ConnectParams, client_dict
from moltis_desktop.protocol.constants import ErrorCode
from moltis_desktop.protocol.frames import ErrorShape

# The subsystem admission logs under, the same for every credential's module.
_LOGGER = logging.getLogger("moltis_desktop.gateway.handshake")

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState


def admit_device_token(
    state: GatewayState,
    params: ConnectParams,
    req: HandshakeRequest,
    protocol: int,
) -> Admission:
    """A paired device connecting with its own token (`auth.deviceToken`)."""
    if params.device is None:
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.NOT_PAIRED,
                "device identity required (a device token is only valid with the device's "
                "signature)",
                {"code": "DEVICE_IDENTITY_REQUIRED"},
            )
        )
    throttled(state, req, params)
    token_scopes = device_token_scopes(state, params, req)
    if token_scopes is None:
        delay = state.auth_throttle.record_failure(req.remote_ip)
        error = device_token_error(params)
        error.delay_s = delay
        raise error
    state.auth_throttle.record_success(req.remote_ip)
    device_id = params.device.id
    requested = tuple(params.scopes or ())
    require_paired(
        state, params, req, device_id, (params.role,), requested, token_scopes=token_scopes
    )
    granted = requested if requested else token_scopes
    return Admission(protocol, params.role, granted, client_dict(params), device_id)


def device_token_scopes(
    state: GatewayState, params: ConnectParams, req: HandshakeRequest
) -> tuple[str, ...] | None:
    """The scopes of the device token this connect carries (with a valid device proof)."""
    auth = params.auth
    token = (auth.device_token or auth.token or "") if auth else ""
    if params.device is None or not token:
        return None
    device_id = check_device(state, params, req)
    if device_id is None:
        return None
    scopes = state.pairing.check_token(device_id, params.role, token)
    _LOGGER.info(
        "device %s: device token %s for role %s",
        device_id[:12],
        "accepted" if scopes is not None else "refused",
        params.role,
    )
    return scopes


def device_token_error(params: ConnectParams) -> HandshakeRejectedError:
    return HandshakeRejectedError(
        ErrorShape(
            ErrorCode.INVALID_REQUEST,
            "unauthorized: device token mismatch (the token was rotated, revoked or the device "
            "removed; pair the device again)",
            {
                "code": "AUTH_DEVICE_TOKEN_MISMATCH",
                "authReason": "device_token_mismatch",
                "canRetryWithDeviceToken": False,
                "recommendedNextStep": "update_auth_credentials",
            },
        )
    )
