"""The shared secret: the gateway's token or password (auth mode `none` admits loopback
clients only), checked under the failed-auth throttle, and the pairing of a device that
comes with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moltis_desktop.gateway.admission.common import (
    HandshakeRejectedError,
    HandshakeRequest,
    auth_error,
)
from moltis_desktop.gateway.admission.device_pairing import require_paired
from moltis_desktop.protocol.connect import ConnectParams
from moltis_desktop.protocol.constants import ErrorCode
from moltis_desktop.protocol.frames import ErrorShape

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState


def check_shared_secret(
    state: GatewayState, params: ConnectParams, req: HandshakeRequest, browser: bool
) -> None:
    secret = state.shared_secret
    auth = params.auth
    token = auth.token if auth else None
    password = auth.password if auth else None
    if secret.mode == "none":
        if not req.local:
            raise HandshakeRejectedError(auth_error("loopback_only", params, req.local))
        return
    if not token and not password and params.device is None:
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.NOT_PAIRED,
                "device identity required",
                {"code": "DEVICE_IDENTITY_REQUIRED"},
            )
        )
    throttle = state.browser_throttle if browser else state.auth_throttle
    key = f"origin:{req.origin}" if browser and req.local and req.origin else req.remote_ip
    retry_after = throttle.retry_after_ms(key)
    if retry_after is not None:
        raise HandshakeRejectedError(auth_error("rate_limited", params, req.local, retry_after))
    # The field matching the mode is preferred, and the other one is tried in its place:
    # the OpenClaw CLI sends whichever it was given.
    given = (token or password) if secret.mode == "token" else (password or token)
    reason = secret.check(given)
    if reason is not None:
        delay = throttle.record_failure(key)
        raise HandshakeRejectedError(auth_error(reason, params, req.local), delay_s=delay)
    throttle.record_success(key)


def pairing_check(
    state: GatewayState,
    params: ConnectParams,
    req: HandshakeRequest,
    device_id: str,
    requested: tuple[str, ...],
) -> Any:
    """A device with the shared secret must be paired (loopback ones are, silently); a
    paired device without a token for its role gets one (returned, for `hello-ok`)."""
    require_paired(state, params, req, device_id, (params.role,), requested)
    store = state.pairing
    if store.has_token(device_id, params.role):
        return None
    return store.issue(device_id, params.role, requested)
