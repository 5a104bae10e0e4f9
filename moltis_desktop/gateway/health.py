"""The gateway's health: the payload (`health` RPC, `hello-ok.snapshot.health`, `health`
events) and its cache (rebuilt at most once a second; the encoded bytes are reused for
every answer)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from moltis_desktop.config.settings import Settings
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.core.clock import Clock
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.paths import sessions_dir
from moltis_desktop.protocol.frames import Raw, encode_json

if TYPE_CHECKING:
    from moltis_desktop.gateway.loopmonitor import EventLoopMonitor
    from moltis_desktop.gateway.services import AgentServices

_LOGGER = logging.getLogger(__name__)

RECENT_SESSIONS = 5
"""Sessions listed in a health summary's `recent` (the most recently updated)."""
CACHE_S = 1.0
"""How long a built payload is reused (OpenClaw caches for 60 s); `{probe: true}` rebuilds."""


class HealthSource(Protocol):
    """What the health payload is made of (the gateway state provides it)."""

    @property
    def config(self) -> ConfigStore: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def loop_monitor(self) -> EventLoopMonitor: ...

    @property
    def agent(self) -> AgentServices | None: ...


def sessions_block(source: HealthSource, agent_id: str) -> dict[str, Any]:
    """OpenClaw's shape: the agent's index file, how many sessions it holds, the latest."""
    agent = agent_id.lower()
    path = sessions_dir(source.state_dir, agent) / "sessions.json"
    services = source.agent
    if services is None:  # the agent side is still loading
        return {"path": str(path), "count": 0, "recent": []}
    try:
        entries = services.chat.sessions.list(agent)
    except (MoltisError, OSError) as exc:  # health answers whatever else is wrong
        _LOGGER.warning("health: cannot list the sessions of %s: %s", agent_id, exc)
        entries = []
    now = source.clock.now_ms()
    recent = [
        {"key": e.key, "updatedAt": e.updated_at, "age": max(0, now - e.updated_at)}
        for e in entries[:RECENT_SESSIONS]
    ]
    return {"path": str(path), "count": len(entries), "recent": recent}


def _heartbeat_block() -> dict[str, Any]:
    # The agent heartbeat (periodic wake-up) is not running in this version.
    return {
        "enabled": False,
        "every": "",
        "everyMs": None,
        "prompt": "",
        "target": "none",
        "ackMaxChars": 0,
    }


def _plugins(source: HealthSource) -> dict[str, Any]:
    services = source.agent
    if services is None:
        return {"loaded": [], "errors": [], "unavailable": []}
    return {
        "loaded": list(services.plugins.names),
        "errors": list(services.plugins.errors),
        "unavailable": [],
    }


def config_state(store: ConfigStore) -> dict[str, Any]:
    """Whether the config file is in use or broken (and then why, and what runs instead)."""
    state: dict[str, Any] = {
        "path": str(store.path),
        "valid": store.error is None,
        "source": store.current.source,
        "loadedAtMs": store.current.loaded_at_ms,
        "warnings": list(store.current.warnings),
    }
    if store.error is not None:
        state["error"] = str(store.error)
        state["key"] = store.error.key
    return state


def build_health(source: HealthSource, *, snapshot: bool = False) -> dict[str, Any]:
    """The health payload. `snapshot` gives the schema-exact subset sent in `hello-ok` and
    `health` events; the RPC adds the config state (a broken config file shows here)."""
    now = source.clock.now_ms()
    settings = source.settings
    default = settings.agents.default
    agents = []
    for agent in settings.agents.list:
        entry: dict[str, Any] = {
            "agentId": agent.id,
            "isDefault": agent.id == default,
            "heartbeat": _heartbeat_block(),
            "sessions": sessions_block(source, agent.id),
        }
        if agent.name:
            entry["name"] = agent.name
        agents.append(entry)
    payload: dict[str, Any] = {
        "ok": True,
        "ts": now,
        "durationMs": 0,
        "eventLoop": source.loop_monitor.snapshot(now),
        "plugins": _plugins(source),
        "configReload": {"hotReloadStatus": "active"},
        "channels": {},
        "channelOrder": [],
        "channelLabels": {},
        "heartbeatSeconds": 0,
        "defaultAgentId": default,
        "agents": agents,
        "sessions": sessions_block(source, default),
    }
    if not snapshot:
        payload["config"] = config_state(source.config)
    return payload


class HealthCache:
    """The encoded health payloads, rebuilt at most once a second (now when `fresh`), and
    the health version clients see in `stateVersion`."""

    def __init__(self, source: HealthSource) -> None:
        self._source = source
        self.version = 1
        self._raw: Raw | None = None
        self._snapshot_raw: Raw | None = None
        self._at = -1e9

    def _cache(self, fresh: bool) -> tuple[Raw, Raw]:
        now = self._source.clock.monotonic()
        if fresh or self._raw is None or now - self._at > CACHE_S:
            payload = build_health(self._source)
            self._raw = Raw(encode_json(payload))
            payload.pop("config")
            self._snapshot_raw = Raw(encode_json(payload))
            self._at = now
        assert self._snapshot_raw is not None
        return self._raw, self._snapshot_raw

    def raw(self, *, fresh: bool = False) -> Raw:
        """The encoded `health` RPC payload."""
        return self._cache(fresh)[0]

    def snapshot_raw(self) -> Raw:
        """The encoded schema-exact snapshot (for `hello-ok`), cached like `raw`."""
        return self._cache(False)[1]

    def invalidate(self) -> None:
        """Make the next answer rebuild the payload."""
        self._raw = None

    def next_snapshot(self) -> dict[str, Any]:
        """A fresh snapshot for a `health` event (the version moves on)."""
        self.version += 1
        return build_health(self._source, snapshot=True)
