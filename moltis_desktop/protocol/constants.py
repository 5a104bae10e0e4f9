"""Numbers and names fixed by the OpenClaw gateway protocol."""

from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 4
"""The protocol version this gateway prefers (OpenClaw since May 2026)."""
MIN_PROTOCOL_VERSION: Final = 3
"""The oldest protocol version still accepted (the N-1 window for probes, nodes and old apps)."""

PREAUTH_MAX_PAYLOAD: Final = 64 * 1024
"""Bytes a frame may have before the handshake completes."""


class ErrorCode:
    """`error.code` values of a `res` frame."""

    INVALID_REQUEST: Final = "INVALID_REQUEST"
    NOT_PAIRED: Final = "NOT_PAIRED"
    NOT_LINKED: Final = "NOT_LINKED"
    AGENT_TIMEOUT: Final = "AGENT_TIMEOUT"
    UNAVAILABLE: Final = "UNAVAILABLE"
    FORBIDDEN: Final = "FORBIDDEN"


class CloseCode:
    """WebSocket close codes the gateway uses."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    PROTOCOL_ERROR: Final = 1002
    """Protocol version mismatch."""
    POLICY_VIOLATION: Final = 1008
    """Bad handshake, auth failure, slow consumer."""
    MESSAGE_TOO_BIG: Final = 1009
    """A frame over the payload limit."""
    INTERNAL_ERROR: Final = 1011
    SERVICE_RESTART: Final = 1012
    """The gateway is shutting down or restarting."""
    TICK_TIMEOUT: Final = 4000
    """Sent by clients that saw no tick for two intervals."""


class Role:
    """Connection roles."""

    OPERATOR: Final = "operator"
    NODE: Final = "node"


class Scope:
    """Operator scopes. `operator.admin` satisfies every check."""

    ADMIN: Final = "operator.admin"
    READ: Final = "operator.read"
    WRITE: Final = "operator.write"
    APPROVALS: Final = "operator.approvals"
    PAIRING: Final = "operator.pairing"
    TALK: Final = "operator.talk"
    TALK_SECRETS: Final = "operator.talk.secrets"


CLIENT_IDS: Final = frozenset(
    {
        "webchat-ui",
        "openclaw-control-ui",
        "openclaw-browser-copilot",
        "openclaw-tui",
        "webchat",
        "cli",
        "gateway-client",
        "openclaw-macos",
        "openclaw-linux",
        "openclaw-ios",
        "openclaw-watchos",
        "openclaw-android",
        "node-host",
        "openclaw-worker",
        "test",
        "fingerprint",
        "openclaw-probe",
        # v3-era names still sent by older apps
        "moltbot-control-ui",
        "moltbot-macos",
        "moltbot-ios",
        "moltbot-android",
        "moltbot-probe",
        "ios-node",
    }
)
