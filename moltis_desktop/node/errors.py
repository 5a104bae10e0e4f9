"""The node host's errors, and how a gateway's refusals and closes map onto them."""

from __future__ import annotations

import logging
from typing import Any

from moltis_desktop.core.errors import MoltisError

_LOGGER = logging.getLogger(__name__)

DEAD_CREDENTIAL_CODES = frozenset(
    {
        "AUTH_DEVICE_TOKEN_MISMATCH",
        "AUTH_TOKEN_MISMATCH",
        "AUTH_TOKEN_MISSING",
        "AUTH_UNAUTHORIZED",
        "BOOTSTRAP_TOKEN_INVALID",
        "BOOTSTRAP_TOKEN_EXPIRED",
        "AUTH_BOOTSTRAP_TOKEN_INVALID",
        "AUTH_BOOTSTRAP_TOKEN_EXPIRED",
    }
)
"""`error.details.code` values of a refused `connect` meaning the credential will never work."""
_REMOVED_REASONS = ("device removed", "token revoked")
_PAIR_AGAIN = "pair it again: `moltis node run --pair <new setup code>`"


class NodeError(MoltisError):
    """Why the node cannot run; the message says what to do."""


class NodeConfigError(NodeError):
    """The node was given something it cannot use (a bad setup code, URL or TLS pin)."""


class NodeUnreachableError(NodeError):
    """No gateway answered (or the connection dropped); worth trying again later."""


class NodeTlsError(NodeError):
    """The gateway's certificate is not the one the setup code pins."""


class NodePairingPending(NodeError):  # noqa: N818 - a state, not a failure
    """The gateway knows this node now, but its owner has not approved it yet."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"waiting for approval: run `moltis devices approve {request_id}` on the gateway's "
            "machine (or use the tray / web app)"
        )
        self.request_id = request_id


class NodeRefusedError(NodeError):
    """The gateway refused `connect`. `retry_after_ms` is set when trying again can help."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_ms = retry_after_ms


class NodeAuthError(NodeRefusedError):
    """The node's credential no longer works (or there is none); it has to be paired again."""

    def __init__(self, code: str, message: str, credential: str = "") -> None:
        super().__init__(code, message)
        self.credential = credential
        """The `auth` field that was refused: deviceToken, token or bootstrapToken."""


class NodeRequestError(NodeError):
    """The gateway answered a request with `ok: false`."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.code = str(error.get("code") or "ERROR")
        self.error = error
        super().__init__(f"{method}: {error.get('message', 'failed')} ({self.code})")


def refusal_error(error: dict[str, Any], field: str) -> NodeError:
    """The error for a refused `connect` (`error` is the response's `error`; `field` the
    `auth` field that was sent): pending approval, retry later, a dead credential, or a refusal."""
    code = str(error.get("code") or "ERROR")
    message = str(error.get("message") or "connect refused")
    raw_details = error.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    detail = str(details.get("code") or "")
    request_id = details.get("requestId")
    if code == "NOT_PAIRED" and isinstance(request_id, str) and request_id:
        return NodePairingPending(request_id)
    retry_after = error.get("retryAfterMs")
    if detail == "AUTH_RATE_LIMITED" or error.get("retryable"):
        wait = int(retry_after) if isinstance(retry_after, int) else 1000
        return NodeRefusedError(detail or code, f"the gateway says: {message}", wait)
    if detail in DEAD_CREDENTIAL_CODES or detail.startswith("AUTH_"):
        return NodeAuthError(detail, dead_credential_message(field, message), field)
    return NodeRefusedError(detail or code, f"the gateway refused this node: {message}")


def dead_credential_message(field: str, message: str) -> str:
    """What to do when the gateway refuses the credential sent in the `auth` field `field`."""
    if field == "deviceToken":
        return (
            f"the gateway no longer accepts this node's token ({message}): it was revoked "
            f"or the node was removed; {_PAIR_AGAIN}"
        )
    if field == "bootstrapToken":
        return (
            f"the setup code no longer works ({message}): codes work once and expire "
            "after 10 minutes; make a new one on the gateway (Pair a Phone, or `moltis qr`) "
            "and run `moltis node run --pair <new code>`"
        )
    return (
        f"the gateway refused the token ({message}): use the gateway's token "
        "(`moltis secrets get gateway-token` on its machine), or pair with "
        "`moltis node run --pair <setup code>`"
    )


def removal_error(code: int | None, reason: str) -> NodeAuthError | None:
    """The error for a gateway closing the socket because this node was removed or its
    token revoked (policy violation, 1008, with such a reason); None for any other close."""
    if code == 1008 and any(r in reason.lower() for r in _REMOVED_REASONS):
        return NodeAuthError(
            "DEVICE_REMOVED",
            f"the gateway disconnected this node ({reason}); {_PAIR_AGAIN}",
            "deviceToken",
        )
    return None


__all__ = [
    "DEAD_CREDENTIAL_CODES",
    "NodeAuthError",
    "NodeConfigError",
    "NodeError",
    "NodePairingPending",
    "NodeRefusedError",
    "NodeRequestError",
    "NodeTlsError",
    "NodeUnreachableError",
    "dead_credential_message",
    "refusal_error",
    "removal_error",
]
