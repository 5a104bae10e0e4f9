"""device.pair.* and device.token.*: approve the devices that ask to pair, and manage
their tokens (operator.pairing, as in OpenClaw)."""

from __future__ import annotations

import base64
import ipaddress
import logging
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import msgspec

from moltis_desktop.core.logging import security_event
from moltis_desktop.gateway.auth import is_loopback
from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.gateway.state import GatewayState, resolve_bind
from moltis_desktop.pairing.bootstrap import PROFILES
from moltis_desktop.pairing.setupcode import (
    SetupCode,
    SetupCodeError,
    check_url,
    encode,
    gateway_urls,
    lan_addresses,
)
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable(
    events=("device.pair.requested", "device.pair.resolved", "device.pair.setup.completed")
)
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
    store = ctx.pairing
    store.prune()
    pending = sorted(store.pending.values(), key=lambda r: -int(r.get("ts", 0)))
    online = {c.device_id for c in ctx.connections if c.device_id}
    paired = []
    for device in store.paired.values():
        entry = store.public(device)
        entry["connected"] = device["deviceId"] in online
        paired.append(entry)
    return {"pending": pending, "paired": paired}


def decide(gateway: GatewayState, request_id: str, approve: bool) -> dict[str, Any] | None:
    """Approve or reject a pending request and tell operators (`device.pair.resolved`);
    None when there is no such request (the methods and the tray app both use this)."""
    store = gateway.pairing
    request = store.approve(request_id) if approve else store.reject(request_id)
    if request is None:
        return None
    decision = "approved" if approve else "rejected"
    gateway.events.broadcast(
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
    security_event(
        f"pairing.{decision}",
        level=logging.INFO,
        device=request["deviceId"],
        ip=request.get("remoteIp"),
        request=request["requestId"],
    )
    return request


@TABLE.method("device.pair.approve", scope=Scope.PAIRING, params=RequestParams)
def pair_approve(ctx: MethodContext, params: RequestParams) -> dict[str, Any]:
    """Pair the device of a pending request; it connects again and gets its token."""
    request = decide(ctx.state, params.request_id, approve=True)
    if request is None:
        raise GatewayError.invalid("unknown or expired pairing request (they last 5 minutes)")
    device = ctx.pairing.paired[request["deviceId"]]
    return {"requestId": params.request_id, "device": ctx.pairing.public(device)}


@TABLE.method("device.pair.reject", scope=Scope.PAIRING, params=RequestParams)
def pair_reject(ctx: MethodContext, params: RequestParams) -> dict[str, Any]:
    request = decide(ctx.state, params.request_id, approve=False)
    if request is None:
        raise GatewayError.invalid("unknown or expired pairing request (they last 5 minutes)")
    return {"requestId": params.request_id, "deviceId": request["deviceId"]}


@TABLE.method("device.pair.remove", scope=Scope.PAIRING, params=DeviceParams)
def pair_remove(ctx: MethodContext, params: DeviceParams) -> dict[str, Any]:
    """Unpair a device: its tokens stop working and its connections close."""
    if not ctx.pairing.remove(params.device_id):
        raise GatewayError.invalid(f"no paired device {params.device_id}")
    for conn in list(ctx.connections):
        if conn.device_id == params.device_id:
            conn.close_soon(1008, "device removed")
    # The canvas URLs it was given stop working (everyone else's with them: clients get
    # fresh ones on their next connect).
    ctx.state.canvas.capabilities.rotate()
    _LOGGER.info("device %s removed", params.device_id[:12])
    security_event("device.removed", level=logging.INFO, device=params.device_id)
    return {"deviceId": params.device_id, "removed": True}


@TABLE.method("device.token.rotate", scope=Scope.PAIRING, params=TokenParams)
def token_rotate(ctx: MethodContext, params: TokenParams) -> dict[str, Any]:
    """A new token for (device, role); the old one stops working. The scopes may not grow
    beyond what the device was approved for."""
    store = ctx.pairing
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
    if not ctx.pairing.revoke(params.device_id, params.role):
        raise GatewayError.invalid(f"device {params.device_id} has no {params.role} token")
    for conn in list(ctx.connections):
        # Its connections in that role end now (they would be refused on their next connect).
        if conn.device_id == params.device_id and conn.role == params.role:
            conn.close_soon(1008, "device token revoked")
    ctx.state.canvas.capabilities.rotate()  # and its canvas URLs, as on removal
    _LOGGER.info("device %s: token for %s revoked", params.device_id[:12], params.role)
    return {"deviceId": params.device_id, "role": params.role, "revoked": True}


class RenameParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    device_id: NonEmpty
    label: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class SetupCodeParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    public_url: NonEmpty | None = None
    prefer_remote_url: bool | None = None
    include_qr: bool | None = None
    bootstrap_profile: str | None = None
    join_url: bool | None = None


class SetupStatusParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    setup_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


@TABLE.method("device.pair.rename", scope=Scope.PAIRING, params=RenameParams)
def pair_rename(ctx: MethodContext, params: RenameParams) -> dict[str, Any]:
    label = " ".join(params.label.split())
    if not label or not ctx.pairing.rename(params.device_id, label):
        raise GatewayError.invalid(f"no paired device {params.device_id}")
    _LOGGER.info("device %s renamed", params.device_id[:12])
    return {"deviceId": params.device_id, "displayName": label}


def _gateway_urls(gateway: GatewayState, public_url: str | None) -> tuple[list[str], str]:
    """The URLs a phone may use to reach this gateway, and where they came from."""
    if public_url:
        try:
            check_url(public_url)
        except SetupCodeError as exc:
            raise GatewayError.invalid(str(exc)) from None
        return [public_url], "publicUrl"
    tls = gateway.settings.gateway.tls.enabled
    host = gateway.host or resolve_bind(gateway.settings.gateway.bind)
    try:
        bound = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        bound = None
    if bound is not None and bound.is_loopback:
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            "phones cannot reach this gateway: it listens on this computer only. Allow it on "
            "your network first (`moltis qr --lan`, the tray's Pair a Phone window, or "
            'gateway.bind = "lan"); the token and pairing approval stay required',
            details={"code": "LAN_DISABLED", "bind": gateway.settings.gateway.bind},
        )
    if bound is not None and not bound.is_unspecified:
        addresses = [str(bound)]
    else:
        addresses = [a for a in lan_addresses() if ":" not in a or (bound and bound.version == 6)]
    urls = gateway_urls(addresses, gateway.port, tls)
    if not urls:
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            "this computer has no network address a phone could use (connect to Wi-Fi or "
            "Ethernet; public addresses need gateway.tls.enabled)",
            details={"code": "NO_LAN_ADDRESS"},
        )
    return urls, "lan"


def qr_data_url(text: str) -> str:
    """A PNG QR code of `text`, as a `data:` URL (small: 4 px per module)."""
    import io

    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=4, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    buffer = io.BytesIO()
    qr.make_image(fill_color="black", back_color="white").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def setup_code(
    gateway: GatewayState,
    *,
    profile: str = "full",
    public_url: str | None = None,
    include_qr: bool = False,
) -> dict[str, Any]:
    """A new setup code (`device.pair.setupCode`; also the tray's Pair a Phone window and
    `moltis qr`). Raises `GatewayError` (details.code `LAN_DISABLED`) when the gateway
    listens on loopback only."""
    if profile not in PROFILES:
        raise GatewayError.invalid(
            f"unknown bootstrapProfile {profile!r}: one of {', '.join(PROFILES)}"
        )
    urls, source = _gateway_urls(gateway, public_url)
    downgraded = False
    if profile == "full" and urls[0].startswith("ws://"):
        # Admin rights never go to a device over plain ws:// on the network (OpenClaw's
        # rule); with gateway.tls.enabled the code grants full access.
        parts = urlsplit(urls[0])
        if not is_loopback(parts.hostname or ""):
            profile, downgraded = "limited", True
    grant = gateway.bootstrap.issue(profile)
    fingerprint = gateway.tls_fingerprint if urls[0].startswith("wss://") else None
    code = encode(
        SetupCode(
            url=urls[0],
            urls=tuple(urls),
            bootstrap_token=grant.token,
            tls_sha256=fingerprint or "",
        )
    )
    result: dict[str, Any] = {
        "setupId": grant.setup_id,
        "setupCode": code,
        "gatewayUrl": urls[0],
        "auth": "password" if gateway.shared_secret.mode == "password" else "token",
        "urlSource": source,
        "access": profile,
        "accessDowngraded": downgraded,
        "expiresAtMs": grant.expires_at_ms,
    }
    if len(urls) > 1:
        result["gatewayUrls"] = urls
    if include_qr:
        result["qrDataUrl"] = qr_data_url(code)
    return result


@TABLE.method("device.pair.setupCode", scope=Scope.ADMIN, params=SetupCodeParams)
def pair_setup_code(ctx: MethodContext, params: SetupCodeParams) -> dict[str, Any]:
    """A setup code for a new phone: the gateway's URLs and a one-time bootstrap token
    (10 minutes). Profiles: full (default), limited, node, voice-node."""
    return setup_code(
        ctx.state,
        profile=params.bootstrap_profile or "full",
        public_url=params.public_url,
        include_qr=bool(params.include_qr),
    )


@TABLE.method("device.pair.setupStatus", scope=Scope.ADMIN, params=SetupStatusParams)
def pair_setup_status(ctx: MethodContext, params: SetupStatusParams) -> dict[str, Any]:
    status = ctx.bootstrap.status(params.setup_id)
    if status is None:
        raise GatewayError.invalid(f"unknown setup code {params.setup_id}")
    return status
