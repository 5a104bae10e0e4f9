"""Pairing at connect: a device must be paired for the roles and scopes it asks for, else it
gets a pending pairing request (loopback devices may be paired silently), whichever
credential it came with."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from moltis_desktop.core.logging import security_event
from moltis_desktop.gateway.admission.common import HandshakeRejectedError, HandshakeRequest
from moltis_desktop.protocol.connect import ConnectParams
from moltis_desktop.protocol.constants import CloseCode, ErrorCode, Role, Scope
from moltis_desktop.protocol.frames import ErrorShape

# The subsystem admission logs under, the same for every credential's module.
_LOGGER = logging.getLogger("moltis_desktop.gateway.handshake")

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState


def require_paired(  # noqa: PLR0917 - one connect's state
    state: GatewayState,
    params: ConnectParams,
    req: HandshakeRequest,
    device_id: str,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    *,
    token_scopes: tuple[str, ...] | None = None,
    setup_id: str | None = None,
) -> None:
    """Refuse (NOT_PAIRED, with a pending request) unless the device is paired for these
    roles and scopes; loopback devices are paired silently when allowed. A device token
    asking for more than it carries is a scope upgrade too."""
    assert params.device is not None
    store = state.pairing
    reason = store.upgrade_reason(device_id, params.device.public_key, roles, scopes)
    if reason is None and token_scopes is not None and not set(scopes) <= set(token_scopes):
        reason = "scope-upgrade"
    if reason is None:
        store.seen(device_id)
        return
    device = {
        "deviceId": device_id,
        "publicKey": params.device.public_key,
        "displayName": params.client.display_name or params.client.id,
        "platform": params.client.platform,
        "deviceFamily": params.client.device_family,
        "clientId": params.client.id,
        "clientMode": params.client.mode,
        "role": params.role,
        "roles": list(roles),
        "scopes": list(scopes),
        "remoteIp": req.remote_ip,
        "reason": reason,
    }
    if setup_id:
        device["setupId"] = setup_id
    device = {k: v for k, v in device.items() if v is not None}
    if req.local and state.settings.gateway.auto_approve_loopback_devices and token_scopes is None:
        store.approve_directly(device)
        store.seen(device_id)
        _LOGGER.info("device %s paired silently (loopback) as %s", device_id[:12], ", ".join(roles))
        security_event(
            "pairing.approved",
            level=logging.INFO,
            device=device_id,
            ip=req.remote_ip,
            how="loopback",
        )
        state.events.broadcast(
            "device.pair.resolved",
            {"requestId": f"silent-{device_id[:16]}", "deviceId": device_id,
             "decision": "approved", "ts": state.clock.now_ms()},
            scope=Scope.PAIRING,
        )  # fmt: skip
        return
    if not store.has_pending(device_id, params.role) and not state.pairing_requests.allow(
        req.remote_ip
    ):
        _LOGGER.warning("pairing request from %s refused: too many requests", req.remote_ip)
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST,
                "too many pairing requests from this address (wait a minute)",
                {"code": "PAIRING_RATE_LIMITED"},
                retryable=True,
                retry_after_ms=60_000,
            )
        )
    entry, new = store.request(device)
    _LOGGER.info(
        "device %s asks to pair as %s from %s (request %s, %s)",
        device_id[:12],
        params.role,
        req.remote_ip,
        entry["requestId"],
        reason,
    )
    security_event(
        "pairing.requested",
        level=logging.INFO,
        device=device_id,
        ip=req.remote_ip,
        request=entry["requestId"],
        reason=reason,
    )
    if new:
        state.events.broadcast(
            "device.pair.requested", _requested_event(entry), scope=Scope.PAIRING
        )
    details: dict[str, Any] = {
        "code": "PAIRING_REQUIRED",
        "requestId": entry["requestId"],
        "reason": reason,
    }
    if params.role == Role.NODE:
        # OpenClaw's client stops reconnecting on PAIRING_REQUIRED unless told to wait; a
        # node host (`openclaw node run`) should come in by itself once an operator approves.
        details.update(recommendedNextStep="wait_then_retry", retryable=True, pauseReconnect=False)
    raise HandshakeRejectedError(
        ErrorShape(
            ErrorCode.NOT_PAIRED,
            "pairing required" if reason == "not-paired" else f"pairing required ({reason})",
            details,
        ),
        CloseCode.POLICY_VIOLATION,
        "pairing required",
    )


_REQUESTED_KEYS = (
    "requestId", "deviceId", "publicKey", "displayName", "platform", "deviceFamily", "clientId",
    "clientMode", "role", "roles", "scopes", "remoteIp", "silent", "isRepair", "ts",
)  # fmt: skip


def _requested_event(entry: dict[str, Any]) -> dict[str, Any]:
    """`device.pair.requested`: the pending request, in the schema's keys."""
    return {k: entry[k] for k in _REQUESTED_KEYS if entry.get(k) not in (None, "")}
