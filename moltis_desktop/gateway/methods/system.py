"""health, status, system-presence, system-event, last-heartbeat."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.gateway.health import config_state, sessions_block
from moltis_desktop.gateway.registry import ANY_OPERATOR, MethodTable
from moltis_desktop.protocol.constants import Role, Scope
from moltis_desktop.protocol.frames import GatewayError, Raw

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext

_LOGGER = logging.getLogger(__name__)
TABLE = MethodTable()


class HealthParams(msgspec.Struct, forbid_unknown_fields=True):
    probe: bool = False
    """Rebuild the snapshot now instead of answering from the cache."""


@TABLE.method("health", scope=ANY_OPERATOR, roles=(Role.OPERATOR, Role.NODE), params=HealthParams)
def health(ctx: MethodContext, params: HealthParams) -> Raw:
    """Gateway health. Callable by every connection (probes included), as in OpenClaw."""
    return ctx.state.health.raw(fresh=params.probe)


def _process_memory() -> dict[str, int]:
    rss = 0
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak if sys.platform == "darwin" else peak * 1024
    return {"rssBytes": rss}


@TABLE.method("status", scope=Scope.READ)
def status(ctx: MethodContext, params: Any) -> dict[str, Any]:
    """A summary of the gateway for `openclaw status` / `moltis status`."""
    gateway = ctx.state
    settings = gateway.settings
    now = gateway.clock.now_ms()
    agent_ids = [a.id for a in settings.agents.list]
    default_model = next(
        (a.model for a in settings.agents.list if a.id == settings.agents.default and a.model), None
    )
    return {
        "runtimeVersion": gateway.version,
        "heartbeat": {
            "defaultAgentId": settings.agents.default,
            "agents": [
                {"agentId": a, "enabled": False, "every": "", "everyMs": None} for a in agent_ids
            ],
        },
        "channelSummary": [],
        "queuedSystemEvents": list(gateway.system_events),
        "degradedSecretOwners": [],
        "degradedPlugins": [],
        "sessions": {
            "paths": [sessions_block(gateway, a)["path"] for a in agent_ids],
            "count": 0,
            "defaults": {"model": default_model, "contextTokens": None},
            "recent": [],
            "byAgent": [{"agentId": a, **sessions_block(gateway, a)} for a in agent_ids],
        },
        "eventLoop": gateway.loop_monitor.snapshot(now),
        "processMemory": _process_memory(),
        "pid": os.getpid(),
        "gateway": {
            "url": gateway.url,
            "bind": settings.gateway.bind,
            "port": gateway.port,
            "authMode": gateway.shared_secret.mode,
            "connections": len(gateway.connections),
            "uptimeMs": gateway.uptime_ms(),
            "bootId": gateway.boot_id,
        },
        "config": config_state(gateway.config),
    }


@TABLE.method("system-presence", scope=Scope.READ)
def system_presence(ctx: MethodContext, params: Any) -> list[dict[str, Any]]:
    """Who is present: the gateway itself, apps, UIs and nodes (newest first)."""
    entries = ctx.presence.entries()
    return sorted(entries, key=lambda e: e.get("ts", 0), reverse=True)


class SystemEventParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    text: str
    idempotency_key: str | None = None
    session_key: str | None = None
    wake: bool | None = None
    device_id: str | None = None
    instance_id: str | None = None
    host: str | None = None
    ip: str | None = None
    mode: str | None = None
    version: str | None = None
    platform: str | None = None
    device_family: str | None = None
    model_identifier: str | None = None
    last_input_seconds: float | None = None
    reason: str | None = None
    roles: list[str] | None = None
    scopes: list[str] | None = None
    tags: list[str] | None = None


_NODE_LINE = re.compile(
    r"^Node:\s*(?P<host>[^()·]+?)\s*(?:\((?P<ip>[^)]*)\))?"
    r"(?:\s*·\s*app\s+(?P<version>\S+))?"
    r"(?:\s*·\s*last input\s+(?P<idle>\d+)s ago)?"
    r"(?:\s*·\s*mode\s+(?P<mode>\S+))?"
    r"(?:\s*·\s*reason\s+(?P<reason>\S+))?\s*$"
)


@TABLE.method("system-event", scope=Scope.ADMIN, params=SystemEventParams, dedupe=True)
def system_event(ctx: MethodContext, params: SystemEventParams) -> dict[str, Any]:
    """A presence beacon or a note for the agent (`Node: host (ip) · app V · mode M` lines
    update presence; other text is queued as a system event for the main session).
    Retries with the same `idempotencyKey` are answered once."""
    text = params.text.strip()
    if not text:
        raise GatewayError.invalid("text required")
    fields: dict[str, Any] = {
        k: v
        for k, v in msgspec.to_builtins(params).items()
        if v is not None and k not in ("idempotencyKey", "sessionKey", "wake")
    }
    match = _NODE_LINE.match(text)
    if match:
        if params.wake:
            raise GatewayError.invalid("wake is not supported for node presence events")
        for key, group in (
            ("host", "host"),
            ("ip", "ip"),
            ("version", "version"),
            ("mode", "mode"),
            ("reason", "reason"),
        ):
            if match.group(group):
                fields.setdefault(key, match.group(group).strip())
        if match.group("idle"):
            fields.setdefault("lastInputSeconds", int(match.group("idle")))
    else:
        ctx.state.system_events.append(text)
    fields["text"] = text
    ctx.presence.system_event(fields)
    ctx.state.broadcast_presence()
    return {"ok": True}


@TABLE.method("last-heartbeat", scope=Scope.READ)
def last_heartbeat(ctx: MethodContext, params: Any) -> None:
    """The last agent heartbeat; null until the agent heartbeat runs (a later release)."""
    return None


@TABLE.method("connect", scope=Scope.ADMIN, advertised=False)
def connect(ctx: MethodContext, params: Any) -> None:
    """`connect` after the handshake: refused (as OpenClaw does), the socket stays open."""
    raise GatewayError.invalid("connect is only valid as the first request")
