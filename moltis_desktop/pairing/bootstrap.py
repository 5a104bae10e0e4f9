"""Bootstrap tokens: the short-lived secret inside a setup code.

A phone that scans a setup code connects with `auth.bootstrapToken`. The token is bound to
the first device that presents it; once that device is approved, its next connect with the
token is answered with device tokens for every role of the token's profile (in
`hello-ok.auth.deviceTokens`), and the token is spent. Tokens expire after 10 minutes, are
stored hashed (atomically, mode 0600), and are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.paths import private_dir

_LOGGER = logging.getLogger(__name__)

BOOTSTRAP_TTL_MS = 10 * 60_000
MAX_LIVE_TOKENS = 32
_KEEP_SPENT_MS = 60 * 60_000
"""How long a spent or expired entry is kept (so `setupStatus` can still answer)."""

OPERATOR_FULL = (
    "operator.admin",
    "operator.approvals",
    "operator.read",
    "operator.talk.secrets",
    "operator.write",
)
PROFILES: dict[str, dict[str, tuple[str, ...]]] = {
    # role -> the scopes its device token carries
    "full": {"node": (), "operator": OPERATOR_FULL},
    "limited": {"node": (), "operator": tuple(s for s in OPERATOR_FULL if s != "operator.admin")},
    "node": {"node": ()},
    "voice-node": {"node": (), "operator": ("operator.read", "operator.talk")},
}
"""What each setup-code profile grants (OpenClaw's bootstrap profiles, plus `node`)."""


class BootstrapError(Exception):
    """A bootstrap token that cannot be used; `reason` is one of unknown, expired, used,
    other-device."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class BootstrapGrant:
    setup_id: str
    token: str
    profile: str
    expires_at_ms: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class BootstrapTokens:
    """Issued bootstrap tokens, by setup id (`<state>/devices/bootstrap.json`)."""

    def __init__(self, state_dir: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = state_dir / "devices" / "bootstrap.json"
        self.clock = clock
        self.entries: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _LOGGER.error(
                "bootstrap tokens in %s cannot be read (%s); starting empty", self.path, exc
            )
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def _save(self) -> None:
        private_dir(self.path.parent)
        atomic_write_text(self.path, json.dumps(self.entries, indent=1))

    def _prune(self) -> None:
        now = self.clock.now_ms()
        stale = [
            k
            for k, e in self.entries.items()
            if now - int(e.get("usedAtMs") or e["expiresAtMs"]) > _KEEP_SPENT_MS
        ]
        for key in stale:
            del self.entries[key]

    def issue(self, profile: str) -> BootstrapGrant:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
        self._prune()
        now = self.clock.now_ms()
        live = sorted(
            (e for e in self.entries.values() if not e.get("usedAtMs") and e["expiresAtMs"] > now),
            key=lambda e: e["createdAtMs"],
        )
        for old in live[: max(0, len(live) - MAX_LIVE_TOKENS + 1)]:
            del self.entries[old["setupId"]]
        token = secrets.token_urlsafe(24)
        setup_id = str(uuid.uuid4())
        entry: dict[str, Any] = {
            "setupId": setup_id,
            "tokenHash": _hash(token),
            "profile": profile,
            "createdAtMs": now,
            "expiresAtMs": now + BOOTSTRAP_TTL_MS,
        }
        self.entries[setup_id] = entry
        self._save()
        _LOGGER.info("setup code %s issued (profile %s, 10 minutes)", setup_id, profile)
        return BootstrapGrant(setup_id, token, profile, entry["expiresAtMs"])

    def check(self, token: str, device_id: str) -> dict[str, Any]:
        """The entry this token belongs to, usable by this device; binds it to the device on
        first use. Raises `BootstrapError` otherwise."""
        digest = _hash(token)
        entry = next(
            (e for e in self.entries.values() if hmac.compare_digest(e["tokenHash"], digest)),
            None,
        )
        if entry is None:
            raise BootstrapError("unknown", "setup code not recognised (make a new one)")
        if entry.get("usedAtMs"):
            raise BootstrapError("used", "setup code already used (make a new one)")
        if self.clock.now_ms() > entry["expiresAtMs"]:
            raise BootstrapError("expired", "setup code expired (they last 10 minutes)")
        bound = entry.get("deviceId")
        if bound and bound != device_id:
            raise BootstrapError("other-device", "setup code already taken by another device")
        if not bound:
            entry["deviceId"] = device_id
            self._save()
        return entry

    def complete(self, setup_id: str, device_id: str, device_name: str | None) -> dict[str, Any]:
        """Spend the token: the device got its tokens. Returns the completion record."""
        entry = self.entries[setup_id]
        now = self.clock.now_ms()
        entry["usedAtMs"] = now
        completion = {
            "setupId": setup_id,
            "deviceId": device_id,
            "access": entry["profile"],
            "ts": now,
        }
        if device_name:
            completion["deviceName"] = device_name[:128]
        entry["completion"] = completion
        self._save()
        return completion

    def status(self, setup_id: str) -> dict[str, Any] | None:
        """None for an unknown setup id, else `{completion?}` (`device.pair.setupStatus`)."""
        entry = self.entries.get(setup_id)
        if entry is None:
            return None
        return {"completion": entry["completion"]} if entry.get("completion") else {}
