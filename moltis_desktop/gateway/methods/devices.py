"""device.pair.* and device.token.*: approve the devices that ask to pair, and manage
their tokens (operator.pairing, as in OpenClaw)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.gateway.server import GatewayServer

TABLE = MethodTable()
_LOGGER = logging.getLogger(__name__)


class RequestParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    request_id: NonEmpty


class DeviceParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    device_id: NonEmpty


class TokenParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    device_id: NonEmpty
    role: NonEmpty
    scopes: list[NonEmpty] | None = None


@TABLE.method("device.pair.list", scope=Scope.PAIRING, params=EmptyParams)
def pair_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Pending requests (newest first) and paired devices."""
    store = ctx.gateway.pairing
    store.prune()
    pending = sorted(store.pending.values(), key=lambda r: -int(r.get("ts", 0)))
    return {"pending": pending, "paired": [store.public(d) for d in store.paired.values()]}


def decide(gateway: GatewayServer, request_id: str, approve: bool) -> dict[str, Any] | None:
    """Approve or reject a pending request and tell operators (`device.pair.resolved`);
    None when there is no such request (the methods and the tray app both use this)."""
    store = gateway.pairing
    request = store.approve(request_id) if approve else store.reject(request_id)
    if request is None:
        return None
    decision = "approved" if approve else "rejected"
    gateway.broadcast(
        "device.pair.resolved",
        {
            "requestId": request["requestId"],
            "deviceId": request["deviceId"],
            "decision": decision,
            "ts": gateway.clock.now_ms(),
        },
        scope=Scope.PAIRING,
    )
    _LOGGER.info("pairing request %s %s", request["requestId"], decision)
    return request


@TABLE.method("device.pair.approve", scope=Scope.PAIRING, params=RequestParams)
def pair_approve(ctx: MethodContext, params: RequestParams) -> dict[str, Any]:
    """Pair the device of a pending request; it connects again and gets its token."""
    request = decide(ctx.gateway, params.request_id, approve=True)
    if request is None:
        raise GatewayError.invalid("unknown or expired pairing request (they last 5 minutes)")
    device = ctx.gateway.pairing.paired[request["deviceId"]]
    return {"requestId": params.request_id, "device": ctx.gateway.pairing.public(device)}


@TABLE.method("device.pair.reject", scope=Scope.PAIRING, params=RequestParams)
def pair_reject(ctx: MethodContext, params: RequestParams) -> dict[str, Any]:
    request = decide(ctx.gateway, params.request_id, approve=False)
    if request is None:
        raise GatewayError.invalid("unknown or expired pairing request (they last 5 minutes)")
    return {"requestId": params.request_id, "deviceId": request["deviceId"]}


@TABLE.method("device.pair.remove", scope=Scope.PAIRING, params=DeviceParams)
def pair_remove(ctx: MethodContext, params: DeviceParams) -> dict[str, Any]:
    """Unpair a device: its tokens stop working and its connections close."""
    if not ctx.gateway.pairing.remove(params.device_id):
        raise GatewayError.invalid(f"no paired device {params.device_id}")
    for conn in list(ctx.gateway.connections):
        if conn.device_id == params.device_id:
            conn.close_soon(1008, "device removed")
    _LOGGER.info("device %s removed", params.device_id[:12])
    return {"deviceId": params.device_id, "removed": True}


@TABLE.method("device.token.rotate", scope=Scope.PAIRING, params=TokenParams)
def token_rotate(ctx: MethodContext, params: TokenParams) -> dict[str, Any]:
    """A new token for (device, role); the old one stops working. The scopes may not grow
    beyond what the device was approved for."""
    store = ctx.gateway.pairing
    device = store.paired.get(params.device_id)
    if device is None or params.role not in device.get("roles", []):
        raise GatewayError.invalid(f"device {params.device_id} is not paired as {params.role}")
    approved = set(device.get("scopes", []))
    scopes = tuple(params.scopes) if params.scopes is not None else tuple(sorted(approved))
    if not set(scopes) <= approved:
        raise GatewayError.invalid(
            "a rotation cannot widen the scopes: approved are " + ", ".join(sorted(approved))
        )
    issued = store.issue(params.device_id, params.role, scopes)
    _LOGGER.info("device %s: token for %s rotated", params.device_id[:12], params.role)
    return {
        "deviceId": params.device_id,
        "role": params.role,
        "scopes": list(scopes),
        "token": issued.token,
        "rotatedAtMs": issued.issued_at_ms,
    }


@TABLE.method("device.token.revoke", scope=Scope.PAIRING, params=TokenParams)
def token_revoke(ctx: MethodContext, params: TokenParams) -> dict[str, Any]:
    if not ctx.gateway.pairing.revoke(params.device_id, params.role):
        raise GatewayError.invalid(f"device {params.device_id} has no {params.role} token")
    _LOGGER.info("device %s: token for %s revoked", params.device_id[:12], params.role)
    return {"deviceId": params.device_id, "role": params.role, "revoked": True}
