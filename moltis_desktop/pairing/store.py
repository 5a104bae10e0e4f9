"""The pairing store (OpenClaw's `devices/pending.json` and `devices/paired.json`): pending
requests (5-minute TTL, capped), paired devices, and per-role device tokens.

Files are written atomically with mode 0600 and read back whole, so a crash leaves the
last complete state. Device tokens are stored hashed (SHA-256): the token itself is shown
once, to the device it was issued to.
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

PENDING_TTL_MS = 5 * 60_000
MAX_PENDING = 64


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Issued:
    """A device token just issued (the only time its value is known)."""

    token: str
    role: str
    scopes: tuple[str, ...]
    issued_at_ms: int


class PairingStore:
    def __init__(self, state_dir: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.folder = state_dir / "devices"
        self.clock = clock
        self.pending: dict[str, dict[str, Any]] = self._load("pending.json")
        self.paired: dict[str, dict[str, Any]] = self._load("paired.json")

    # ------------------------------------------------------------------ files

    def _load(self, name: str) -> dict[str, dict[str, Any]]:
        path = self.folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _LOGGER.error("the pairing file %s cannot be read (%s); starting empty", path, exc)
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def save(self) -> None:
        """Write both files (after a change made to an entry in place)."""
        self._save()

    def _save(self) -> None:
        private_dir(self.folder)
        atomic_write_text(self.folder / "pending.json", json.dumps(self.pending, indent=1))
        atomic_write_text(self.folder / "paired.json", json.dumps(self.paired, indent=1))

    # ------------------------------------------------------------------ requests

    def prune(self) -> None:
        now = self.clock.now_ms()
        expired = [k for k, r in self.pending.items() if now - int(r.get("ts", 0)) > PENDING_TTL_MS]
        for key in expired:
            del self.pending[key]
        if expired:
            self._save()

    def has_pending(self, device_id: str, role: str) -> bool:
        return any(
            r["deviceId"] == device_id and r.get("role") == role for r in self.pending.values()
        )

    def request(self, device: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The pending request for this device (made if none); True when new."""
        self.prune()
        for existing in self.pending.values():
            if existing["deviceId"] == device["deviceId"] and existing.get("role") == device.get(
                "role"
            ):
                # The same device asking again (maybe for more): one request, widened.
                merged = {
                    **device,
                    "requestId": existing["requestId"],
                    "ts": existing["ts"],
                    "isRepair": existing.get("isRepair", False),
                    "roles": sorted({*existing.get("roles", []), *device.get("roles", [])}),
                    "scopes": sorted({*existing.get("scopes", []), *device.get("scopes", [])}),
                }
                if merged != existing:
                    existing.clear()
                    existing.update(merged)
                    self._save()
                return existing, False
        if len(self.pending) >= MAX_PENDING:
            oldest = min(self.pending.values(), key=lambda r: int(r.get("ts", 0)))
            del self.pending[oldest["requestId"]]
        entry = {
            **device,
            "requestId": str(uuid.uuid4()),
            "ts": self.clock.now_ms(),
            "isRepair": device["deviceId"] in self.paired,
        }
        self.pending[entry["requestId"]] = entry
        self._save()
        return entry, True

    def approve(self, request_id: str) -> dict[str, Any] | None:
        """Pair the requesting device (with the role and scopes it asked for)."""
        self.prune()
        req = self.pending.pop(request_id, None)
        if req is None:
            return None
        self._pair(req)
        self._save()
        return req

    def approve_directly(self, device: dict[str, Any]) -> None:
        """Pair without a request (a loopback device, approved silently)."""
        self._pair(device)
        self._save()

    def _pair(self, req: dict[str, Any]) -> None:
        now = self.clock.now_ms()
        current = self.paired.get(req["deviceId"], {})
        roles = sorted(
            {*current.get("roles", []), req.get("role", "operator"), *req.get("roles", [])}
        )
        scopes = sorted({*current.get("scopes", []), *req.get("scopes", [])})
        self.paired[req["deviceId"]] = {
            **current,
            "deviceId": req["deviceId"],
            "publicKey": req["publicKey"],
            "displayName": current.get("displayName") or req.get("displayName"),
            "platform": req.get("platform"),
            "clientId": req.get("clientId"),
            "clientMode": req.get("clientMode"),
            "role": req.get("role"),
            "roles": roles,
            "scopes": scopes,
            "remoteIp": req.get("remoteIp"),
            "tokens": current.get("tokens", {}),
            "createdAtMs": current.get("createdAtMs", now),
            "approvedAtMs": now,
        }

    def reject(self, request_id: str) -> dict[str, Any] | None:
        req = self.pending.pop(request_id, None)
        if req is not None:
            self._save()
        return req

    def remove(self, device_id: str) -> bool:
        removed = self.paired.pop(device_id, None) is not None
        if removed:
            self._save()
        return removed

    # ------------------------------------------------------------------ devices

    def is_paired(
        self, device_id: str, public_key: str, role: str, scopes: tuple[str, ...]
    ) -> bool:
        """Paired with this key, for this role, and for these scopes (no upgrade asked)."""
        return self.upgrade_reason(device_id, public_key, (role,), scopes) is None

    def upgrade_reason(
        self, device_id: str, public_key: str, roles: tuple[str, ...], scopes: tuple[str, ...]
    ) -> str | None:
        """None when the device is paired for all these roles and scopes, else why a
        request is needed: `not-paired`, `role-upgrade` or `scope-upgrade` (OpenClaw's
        reasons)."""
        entry = self.paired.get(device_id)
        if entry is None or entry.get("publicKey") != public_key:
            return "not-paired"
        if not set(roles) <= set(entry.get("roles", [])):
            return "role-upgrade"
        if not set(scopes) <= set(entry.get("scopes", [])):
            return "scope-upgrade"
        return None

    def seen(self, device_id: str, reason: str = "connect") -> None:
        """Note that a paired device just connected (kept in memory; saved with the next
        change, so a connect costs no disk write)."""
        entry = self.paired.get(device_id)
        if entry is not None:
            entry["lastSeenAtMs"] = self.clock.now_ms()
            entry["lastSeenReason"] = reason

    def rename(self, device_id: str, label: str) -> bool:
        entry = self.paired.get(device_id)
        if entry is None:
            return False
        entry["displayName"] = label
        self._save()
        return True

    def issue(self, device_id: str, role: str, scopes: tuple[str, ...]) -> Issued:
        """A new token for (device, role); any earlier one stops working."""
        now = self.clock.now_ms()
        token = secrets.token_hex(16)
        entry = self.paired[device_id]
        entry.setdefault("tokens", {})[role] = {
            "tokenHash": _hash(token),
            "role": role,
            "scopes": list(scopes),
            "createdAtMs": now,
            "rotatedAtMs": now,
        }
        self._save()
        return Issued(token, role, scopes, now)

    def has_token(self, device_id: str, role: str) -> bool:
        token = (self.paired.get(device_id) or {}).get("tokens", {}).get(role)
        return bool(token) and not token.get("revokedAtMs")

    def check_token(self, device_id: str, role: str, token: str) -> tuple[str, ...] | None:
        """The scopes of a valid device token, else None (constant-time compare)."""
        entry = (self.paired.get(device_id) or {}).get("tokens", {}).get(role)
        if not entry or entry.get("revokedAtMs") or not token:
            return None
        if not hmac.compare_digest(entry["tokenHash"], _hash(token)):
            return None
        entry["lastUsedAtMs"] = self.clock.now_ms()
        return tuple(entry.get("scopes", []))

    def revoke(self, device_id: str, role: str) -> bool:
        entry = (self.paired.get(device_id) or {}).get("tokens", {}).get(role)
        if not entry:
            return False
        entry["revokedAtMs"] = self.clock.now_ms()
        self._save()
        return True

    def public(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A device as `device.pair.list` shows it (token hashes left out)."""
        out = {k: v for k, v in entry.items() if k != "tokens" and v is not None}
        tokens = entry.get("tokens") or {}
        out["tokens"] = [{k: v for k, v in t.items() if k != "tokenHash"} for t in tokens.values()]
        return out
