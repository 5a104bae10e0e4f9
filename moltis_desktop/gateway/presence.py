"""Presence: the gateway itself, the clients that show up as present, and system events."""

from __future__ import annotations

import platform
import socket
from collections import OrderedDict
from typing import Any

from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.protocol.constants import Role

# Short-lived command-line, probe and backend connections are not "present" (OpenClaw leaves
# them out too); apps, UIs and nodes are.
_NOT_PRESENT_MODES = frozenset({"cli", "probe", "backend", "test"})
_MAX_ENTRIES = 200
_PRESENCE_KEYS = (
    "host",
    "ip",
    "version",
    "platform",
    "deviceFamily",
    "modelIdentifier",
    "timeZone",
    "mode",
    "lastInputSeconds",
    "reason",
    "tags",
    "text",
    "deviceId",
    "roles",
    "scopes",
    "instanceId",
)


def _local_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # No packet is sent: connecting a UDP socket only picks the outgoing interface.
            sock.connect(("192.0.2.1", 9))
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class PresenceTracker:
    """Who is present, as `system-presence` lists it; `version` counts changes."""

    def __init__(self, *, version: str, instance_id: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.version = 0
        host = socket.gethostname() or "localhost"
        self._self_entry: dict[str, Any] = {
            "host": host,
            "ip": _local_ip(),
            "version": version,
            "platform": f"{platform.system().lower()} {platform.release()}".strip(),
            "deviceFamily": platform.system() or "Unknown",
            "mode": "gateway",
            "reason": "self",
            "instanceId": instance_id,
        }
        self._self_entry["text"] = (
            f"Gateway: {host} ({self._self_entry['ip']}) · app {version}"
            " · mode gateway · reason self"
        )
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def entries(self) -> list[dict[str, Any]]:
        """The presence list: the gateway first, then others, most recent last."""
        me = dict(self._self_entry, ts=self._clock.now_ms())
        return [me, *self._entries.values()]

    def _put(self, key: str, entry: dict[str, Any]) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > _MAX_ENTRIES:
            self._entries.popitem(last=False)
        self.version += 1

    def client_connected(
        self,
        key: str,
        client: dict[str, Any],
        *,
        ip: str,
        role: str,
        scopes: list[str],
        device_id: str | None,
    ) -> bool:
        """Add a connecting client; False when its mode is not shown in presence."""
        mode = str(client.get("mode", ""))
        if mode in _NOT_PRESENT_MODES:
            return False
        name = client.get("displayName") or client.get("id") or "client"
        entry: dict[str, Any] = {
            "host": str(name),
            "ip": ip,
            "version": client.get("version"),
            "platform": client.get("platform"),
            "deviceFamily": client.get("deviceFamily"),
            "modelIdentifier": client.get("modelIdentifier"),
            "mode": mode,
            "reason": "connect",
            "instanceId": client.get("instanceId") or key,
            "roles": [role],
            "scopes": scopes,
            "deviceId": device_id,
            "text": f"{'Node' if role == Role.NODE else 'Client'}: {name} · mode {mode}",
            "ts": self._clock.now_ms(),
        }
        self._put(key, {k: v for k, v in entry.items() if v not in (None, "")})
        return True

    def client_disconnected(self, key: str) -> bool:
        """Remove a client; False when it was not listed."""
        if self._entries.pop(key, None) is None:
            return False
        self.version += 1
        return True

    def system_event(self, params: dict[str, Any]) -> None:
        """Record a presence beacon / system event sent by a client."""
        key = str(
            params.get("instanceId") or params.get("deviceId") or params.get("host") or "system"
        )
        entry = {k: params[k] for k in _PRESENCE_KEYS if params.get(k) not in (None, "")}
        if "lastInputSeconds" in entry:
            entry["lastInputSeconds"] = max(0, int(entry["lastInputSeconds"]))
        entry.setdefault("reason", "event")
        entry["ts"] = self._clock.now_ms()
        previous = self._entries.get(key, {})
        self._put(key, {**previous, **entry})
