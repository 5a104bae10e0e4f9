"""What every credential's admission shares: the socket's `HandshakeRequest`, the accepted
`Admission`, the `HandshakeRejectedError` and the auth errors it carries, the failed-auth
throttle check, and the device proof check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moltis_desktop.pairing.identity import (
    DeviceProofError,
    SignedConnect,
    verify_device_proof,
)
from moltis_desktop.protocol.connect import ConnectParams
from moltis_desktop.protocol.constants import CloseCode, ErrorCode
from moltis_desktop.protocol.frames import ErrorShape

# The subsystem admission logs under, the same for every credential's module.
_LOGGER = logging.getLogger("moltis_desktop.gateway.handshake")

if TYPE_CHECKING:
    from moltis_desktop.gateway.state import GatewayState

_CLOSE_REASON_MAX_BYTES = 120


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
    issued_all: tuple[Any, ...] = ()
    """Every token a setup code handed over (`hello-ok.auth.deviceTokens`)."""
    node_surface: dict[str, Any] | None = None
    """A node's declared caps, commands, permissions and PATH."""


@dataclass(frozen=True)
class HandshakeRequest:
    """What the gateway knows about the connecting socket."""

    remote_ip: str
    """The client's address (through `gateway.trusted_proxies`, see `gateway/trust.py`)."""
    origin: str | None
    host_header: str | None
    nonce: str
    local: bool = False
    """On this machine and not behind an undeclared proxy (`trust.client_address`)."""
    owner: bool = False
    """Over the owner socket, from a process of the gateway's own user (the kernel's peer
    credentials; `gateway/owner_socket.py`). Stronger than `local`: loopback TCP is open to
    every user of the machine, this socket to one. Implies `local`."""


def auth_error(
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


def throttled(state: GatewayState, req: HandshakeRequest, params: ConnectParams) -> None:
    retry_after = state.auth_throttle.retry_after_ms(req.remote_ip)
    if retry_after is not None:
        raise HandshakeRejectedError(auth_error("rate_limited", params, req.local, retry_after))


def check_device(state: GatewayState, params: ConnectParams, req: HandshakeRequest) -> str | None:
    device = params.device
    if device is None:
        return None
    now_ms = state.clock.now_ms()
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
        verify_device_proof(proof, challenge_nonce=req.nonce, now_ms=now_ms, loopback=req.local)
    except DeviceProofError as exc:
        _LOGGER.warning("device %s: proof refused (%s)", device.id[:12], exc.code)
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST, exc.message, {"code": exc.code, "reason": exc.message}
            )
        ) from None
    if not device.nonce and not state.legacy_signatures.first_use(device.signature, now_ms):
        _LOGGER.warning("device %s: legacy signature replayed", device.id[:12])
        raise HandshakeRejectedError(
            ErrorShape(
                ErrorCode.INVALID_REQUEST,
                "device signature already used (sign each connect anew, with the challenge nonce)",
                {"code": "DEVICE_AUTH_SIGNATURE_REPLAYED"},
            )
        )
    return device.id
