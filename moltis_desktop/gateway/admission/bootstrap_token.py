"""The bootstrap token: a setup code's single-use token, bound to the first device that
presents it; once that device's pairing is approved it gets device tokens for every role of
the code's profile."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from moltis_desktop.core.logging import security_event
from moltis_desktop.gateway.admission.common import (
    Admission,
    HandshakeRejectedError,
    HandshakeRequest,
    check_device,
    throttled,
)
from moltis_desktop.gateway.admission.device_pairing import require_paired
from moltis_desktop.pairing.bootstrap import PROFILES, BootstrapError
from moltis_desktop.protocol.connect import ConnectParams, client_dict
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import ErrorShape

# The subsystem admission logs under, the same for every credential's module.
_LOGGER = logging.getLogger("moltis_desktop.gateway.handshake")

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState


def admit_bootstrap(
    state: GatewayState,
    params: ConnectParams,
    req: HandshakeRequest,
    protocol: int,
) -> Admission:
    """A device that scanned a setup code: paired once approved, then handed device tokens
    for every role of the code's profile (`hello-ok.auth.deviceTokens`)."""
    assert params.auth is not None
    assert params.auth.bootstrap_token
    if params.device is None:
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.NOT_PAIRED,
                "device identity required (a setup code is only valid with a device identity)",
                {"code": "DEVICE_IDENTITY_REQUIRED"},
            )
        )
    throttled(state, req, params)
    device_id = check_device(state, params, req)
    assert device_id is not None
    try:
        entry = state.bootstrap.check(params.auth.bootstrap_token, device_id)
    except BootstrapError as exc:
        delay = state.auth_throttle.record_failure(req.remote_ip)
        _LOGGER.warning("device %s: setup code refused (%s)", device_id[:12], exc.reason)
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST,
                f"unauthorized: {exc.message}",
                {
                    "code": "AUTH_BOOTSTRAP_TOKEN_INVALID",
                    "authReason": "bootstrap_token_invalid",
                    "reason": exc.reason,
                    "canRetryWithDeviceToken": state.pairing.has_token(device_id, params.role),
                    "recommendedNextStep": "update_auth_credentials",
                },
            ),
            delay_s=delay,
        ) from None
    state.auth_throttle.record_success(req.remote_ip)
    profile = PROFILES[entry["profile"]]
    requested = tuple(params.scopes or ())
    if params.role not in profile or not set(requested) <= set(profile[params.role]):
        allowed = ", ".join(f"{r} ({', '.join(s) or 'no scopes'})" for r, s in profile.items())
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST,
                f"unauthorized: this setup code grants {allowed}",
                {"code": "AUTH_SCOPE_MISMATCH", "authReason": "scope_mismatch"},
            )
        )
    roles = tuple(sorted(profile))
    all_scopes = tuple(sorted({s for scopes in profile.values() for s in scopes}))
    require_paired(state, params, req, device_id, roles, all_scopes,
                   setup_id=entry["setupId"])  # fmt: skip
    store = state.pairing
    issued_all = tuple(store.issue(device_id, role, profile[role]) for role in roles)
    mine = next(i for i in issued_all if i.role == params.role)
    name = params.client.display_name or params.client.id
    completion = state.bootstrap.complete(entry["setupId"], device_id, name)
    _LOGGER.info(
        "device %s paired through setup code %s (%s): tokens for %s",
        device_id[:12],
        entry["setupId"],
        entry["profile"],
        ", ".join(roles),
    )
    security_event(
        "pairing.approved", level=logging.INFO, device=device_id, ip=req.remote_ip, how="setup code"
    )
    state.events.broadcast("device.pair.setup.completed", completion, scope=Scope.PAIRING)
    granted = requested if requested else profile[params.role]
    return Admission(protocol, params.role, granted, client_dict(params), device_id, mine,
                     issued_all)  # fmt: skip
