"""Nodes: connected devices (phones, other computers, the desktop app itself) that run
commands for the agent and the operators.

A node connects with role `node`, declaring `caps`, `commands` and `permissions`. Which of
its commands may be invoked is decided here: the platform's default allowlist, plus
`gateway.nodes.allow_commands`, minus `gateway.nodes.deny_commands`, and only those the
owner approved for this node (its "surface"). Approving the device's pairing approves the
surface it declared then; a node that later declares more commands gets a `node.pair.*`
request for the new ones, and until it is approved they stay off.

`node.invoke` sends the node a `node.invoke.request` event and waits for its
`node.invoke.result` (with a timeout); results are matched by id and by the node that
sent them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.core.paths import private_dir
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, encode_event_body

if TYPE_CHECKING:
    from moltis_desktop.config.settings import Settings
    from moltis_desktop.core.clock import Clock
    from moltis_desktop.gateway.broadcast import EventSink
    from moltis_desktop.gateway.connection import Connection
    from moltis_desktop.pairing.store import PairingStore

_LOGGER = logging.getLogger(__name__)

_CANVAS = (
    "canvas.present",
    "canvas.hide",
    "canvas.navigate",
    "canvas.eval",
    "canvas.snapshot",
    "canvas.a2ui.push",
    "canvas.a2ui.pushJSONL",
    "canvas.a2ui.reset",
)
_PHONE = (
    *_CANVAS,
    "camera.list",
    "camera.snap",
    "camera.clip",
    "screen.record",
    "location.get",
    "device.info",
    "device.status",
    "photos.latest",
    "contacts.search",
    "calendar.events",
    "motion.activity",
    "system.notify",
)
_COMPUTER = (
    *_CANVAS,
    "system.notify",
    "system.which",
    "system.execApprovals.get",
    "camera.list",
    "camera.snap",
    "screen.record",
    "location.get",
)
PLATFORM_DEFAULT_COMMANDS: dict[str, frozenset[str]] = {
    "ios": frozenset(_PHONE),
    "ipados": frozenset(_PHONE),
    "android": frozenset((*_PHONE, "sms.send")),
    "macos": frozenset(_COMPUTER),
    "darwin": frozenset(_COMPUTER),
    "linux": frozenset(_COMPUTER),
    "windows": frozenset(_COMPUTER),
    "win32": frozenset(_COMPUTER),
}
"""Commands a node of each platform may be asked to run without extra configuration.
Commands that run programs or reach the file system (`system.run`, `browser.proxy`, …) are
not in any default: the owner lists them in `gateway.nodes.allow_commands`."""
ADMIN_COMMANDS = frozenset(
    {
        "system.run",
        "system.run.prepare",
        "system.which",
        "system.execApprovals.set",
        "browser.proxy",
        "browser.proxy.upload.v1",
        "fs.listDir",
        "terminal.upload",
    }
)
"""Commands whose invocation (and approval) needs `operator.admin`, as in OpenClaw."""
DEFAULT_VOICEWAKE_TRIGGERS = ("moltis", "computer")
_PENDING_TTL_MS = 5 * 60_000
_MAX_RESULT_BYTES = 4 * 1024 * 1024


def platform_key(platform: str | None) -> str:
    text = (platform or "").strip().lower()
    for key in PLATFORM_DEFAULT_COMMANDS:
        if text.startswith(key):
            return key
    return text


@dataclass
class NodeSession:
    """One connected node."""

    node_id: str
    conn: Connection
    client: dict[str, Any]
    declared: dict[str, Any]
    commands: list[str]
    """The commands that may be invoked now (declared ∩ allowed ∩ approved)."""
    connected_at_ms: int
    remote_ip: str
    events: dict[str, Any] = field(default_factory=dict)
    """The last payload of each `node.event` it sent."""
    invokes: int = 0


class NodeRegistry:
    """Connected nodes, their surfaces, `node.invoke` calls in flight, wake words."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        pairing: PairingStore,
        events: EventSink,
        clock: Clock,
        state_dir: Path,
    ) -> None:
        self._settings = settings
        self._pairing = pairing
        self._events = events
        self._clock = clock
        self.sessions: dict[str, NodeSession] = {}
        self.pending_surfaces: dict[str, dict[str, Any]] = {}
        """`node.pair.*` requests: commands a node declared beyond its approved surface."""
        self._invokes: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._voicewake_path = Path(state_dir) / "voicewake.json"
        self.voicewake_triggers: list[str] = self._load_triggers()

    # ------------------------------------------------------------------ policy

    def allowed(self, platform: str | None) -> frozenset[str]:
        """Commands a node on `platform` may run (defaults + allow - deny)."""
        settings = self._settings().gateway.nodes
        base = PLATFORM_DEFAULT_COMMANDS.get(platform_key(platform), frozenset(_CANVAS))
        return (base | frozenset(settings.allow_commands)) - frozenset(settings.deny_commands)

    @staticmethod
    def approve_scopes(commands: list[str]) -> list[str]:
        """Scopes needed to approve a surface with these commands."""
        if any(c in ADMIN_COMMANDS for c in commands):
            return [Scope.PAIRING, Scope.ADMIN]
        return [Scope.PAIRING, Scope.WRITE]

    # ------------------------------------------------------------------ lifecycle

    def connected(
        self,
        conn: Connection,
        *,
        client: dict[str, Any],
        device_id: str | None,
        surface: dict[str, Any] | None,
    ) -> None:
        """Register a node that just said hello (its `client` block, its device id when it
        proved one, the caps/commands/permissions it declared), and tell it the wake words."""
        declared = surface or {"caps": [], "commands": [], "permissions": {}}
        node_id = device_id or str(client.get("instanceId") or conn.conn_id)
        conn.node_id = node_id
        commands = self._effective_commands(node_id, client, device_id, declared)
        previous = self.sessions.get(node_id)
        if previous is not None and previous.conn is not conn:
            previous.conn.close_soon(1008, "replaced by a newer connection of this node")
        self.sessions[node_id] = NodeSession(
            node_id=node_id,
            conn=conn,
            client=client,
            declared=declared,
            commands=commands,
            connected_at_ms=self._clock.now_ms(),
            remote_ip=conn.remote_ip,
        )
        _LOGGER.info(
            "node %s connected (%s, %d commands usable of %d declared)",
            node_id[:12],
            client.get("platform"),
            len(commands),
            len(declared.get("commands", [])),
        )
        conn.send_event(
            encode_event_body("voicewake.changed", {"triggers": self.voicewake_triggers}),
            droppable=False,
        )

    def _effective_commands(
        self,
        node_id: str,
        client: dict[str, Any],
        device_id: str | None,
        declared: dict[str, Any],
    ) -> list[str]:
        wanted = [str(c) for c in declared.get("commands", [])]
        allowed = self.allowed(client.get("platform"))
        permitted = [c for c in wanted if c in allowed]
        store = self._pairing
        device = store.paired.get(node_id) if device_id else None
        if device is None:
            # A node without a device identity holds the shared secret: the owner's own.
            return permitted
        surface = device.get("nodeSurface")
        if surface is None:
            # First connect since the device's pairing was approved: that approval covers
            # the surface it declared.
            surface = {
                "caps": list(declared.get("caps", [])),
                "commands": permitted,
                "approvedAtMs": self._clock.now_ms(),
            }
            device["nodeSurface"] = surface
            store.save()
            return permitted
        approved = set(surface.get("commands", []))
        extra = [c for c in permitted if c not in approved]
        if extra:
            self._request_surface(node_id, client, declared, permitted)
        return [c for c in permitted if c in approved]

    def _request_surface(
        self,
        node_id: str,
        client: dict[str, Any],
        declared: dict[str, Any],
        commands: list[str],
    ) -> None:
        self._prune_pending()
        for existing in self.pending_surfaces.values():
            if existing["nodeId"] == node_id:
                existing.update(commands=commands, caps=list(declared.get("caps", [])))
                return
        request = {
            "requestId": str(uuid.uuid4()),
            "nodeId": node_id,
            "clientId": client.get("id"),
            "clientMode": client.get("mode"),
            "displayName": client.get("displayName") or client.get("id"),
            "platform": client.get("platform"),
            "version": client.get("version"),
            "deviceFamily": client.get("deviceFamily"),
            "caps": list(declared.get("caps", [])),
            "commands": commands,
            "requiredApproveScopes": self.approve_scopes(commands),
            "silent": False,
            "ts": self._clock.now_ms(),
        }
        request = {k: v for k, v in request.items() if v is not None}
        self.pending_surfaces[str(request["requestId"])] = request
        _LOGGER.info(
            "node %s asks for new commands (request %s)", node_id[:12], request["requestId"]
        )
        self._events.broadcast("node.pair.requested", request, scope=Scope.PAIRING)

    def _prune_pending(self) -> None:
        now = self._clock.now_ms()
        for key in [k for k, r in self.pending_surfaces.items() if now - r["ts"] > _PENDING_TTL_MS]:
            del self.pending_surfaces[key]

    def resolve_surface(self, request_id: str, approve: bool) -> dict[str, Any] | None:
        """Approve or reject a `node.pair` request (None when there is none)."""
        self._prune_pending()
        request = self.pending_surfaces.pop(request_id, None)
        if request is None:
            return None
        node_id = request["nodeId"]
        if approve:
            device = self._pairing.paired.get(node_id)
            if device is not None:
                surface = device.setdefault("nodeSurface", {"commands": [], "caps": []})
                surface["commands"] = sorted({*surface.get("commands", []), *request["commands"]})
                surface["caps"] = sorted({*surface.get("caps", []), *request["caps"]})
                surface["approvedAtMs"] = self._clock.now_ms()
                self._pairing.save()
            session = self.sessions.get(node_id)
            if session is not None:
                session.commands = list(request["commands"])
        decision = "approved" if approve else "rejected"
        self._events.broadcast(
            "node.pair.resolved",
            {"requestId": request_id, "nodeId": node_id, "decision": decision,
             "ts": self._clock.now_ms()},
            scope=Scope.PAIRING,
        )  # fmt: skip
        _LOGGER.info("node surface request %s %s", request_id, decision)
        return request

    def disconnected(self, conn: Connection) -> None:
        node_id = conn.node_id
        if node_id is None:
            return
        session = self.sessions.get(node_id)
        if session is None or session.conn is not conn:
            return
        del self.sessions[node_id]
        device = self._pairing.paired.get(node_id)
        if device is not None:
            device["lastSeenAtMs"] = self._clock.now_ms()
            device["lastSeenReason"] = "disconnect"
        for invoke_id, (target, future) in list(self._invokes.items()):
            if target == node_id and not future.done():
                future.set_exception(
                    GatewayError(
                        ErrorCode.UNAVAILABLE,
                        f"node {node_id[:12]} disconnected before answering",
                        details={"code": "NODE_DISCONNECTED"},
                        retryable=True,
                    )
                )
                del self._invokes[invoke_id]
        _LOGGER.info("node %s disconnected", node_id[:12])

    # ------------------------------------------------------------------ views

    def entry(self, node_id: str) -> dict[str, Any] | None:
        """A node as `node.list` shows it (connected or paired), or None."""
        session = self.sessions.get(node_id)
        device = self._pairing.paired.get(node_id)
        if session is None and (device is None or "node" not in device.get("roles", [])):
            return None
        out: dict[str, Any] = {"nodeId": node_id}
        if session is not None:
            client = session.client
            out.update(
                displayName=client.get("displayName") or client.get("id"),
                platform=client.get("platform"),
                version=client.get("version"),
                clientId=client.get("id"),
                clientMode=client.get("mode"),
                deviceFamily=client.get("deviceFamily"),
                modelIdentifier=client.get("modelIdentifier"),
                caps=list(session.declared.get("caps", [])),
                commands=list(session.commands),
                permissions=dict(session.declared.get("permissions") or {}),
                remoteIp=session.remote_ip,
                connectedAtMs=session.connected_at_ms,
                lastSeenAtMs=self._clock.now_ms(),
                lastSeenReason="connected",
            )
        if device is not None:
            surface = device.get("nodeSurface") or {}
            out.setdefault("displayName", device.get("displayName"))
            out.setdefault("platform", device.get("platform"))
            out.setdefault("clientId", device.get("clientId"))
            out.setdefault("clientMode", device.get("clientMode"))
            out.setdefault("caps", list(surface.get("caps", [])))
            out.setdefault("commands", list(surface.get("commands", [])))
            out.setdefault("lastSeenAtMs", device.get("lastSeenAtMs"))
            out.setdefault("lastSeenReason", device.get("lastSeenReason"))
            if device.get("displayName"):
                out["displayName"] = device["displayName"]  # a rename wins
            out["approvedAtMs"] = surface.get("approvedAtMs", device.get("approvedAtMs"))
        pending = any(r["nodeId"] == node_id for r in self.pending_surfaces.values())
        out["approvalState"] = "pending-approval" if pending else "approved"
        out["paired"] = device is not None
        out["connected"] = session is not None
        return {k: v for k, v in out.items() if v is not None}

    def list_nodes(self) -> list[dict[str, Any]]:
        ids = list(self.sessions)
        for device_id, device in self._pairing.paired.items():
            if "node" in device.get("roles", []) and device_id not in self.sessions:
                ids.append(device_id)
        entries = [e for e in (self.entry(i) for i in ids) if e is not None]
        entries.sort(key=lambda e: (not e["connected"], str(e.get("displayName", ""))))
        return entries

    # ------------------------------------------------------------------ invoke

    async def invoke(
        self,
        node_id: str,
        command: str,
        params: Any,
        *,
        timeout_ms: int | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        """Run `command` on a node and return `{ok, nodeId, command, payload}`."""
        session = self.sessions.get(node_id) or self._by_name(node_id)
        if session is None:
            known = self._pairing.paired.get(node_id)
            hint = "it is paired but not connected" if known else "no such node (`node.list`)"
            raise GatewayError(
                ErrorCode.UNAVAILABLE,
                f"node {node_id} is not connected: {hint}",
                details={"code": "NODE_NOT_CONNECTED"},
                retryable=bool(known),
            )
        if command in self._settings().gateway.nodes.deny_commands:
            raise GatewayError.invalid(
                f"{command} is denied by gateway.nodes.deny_commands",
                details={"code": "COMMAND_DENIED"},
            )
        if command not in session.commands:
            declared = command in session.declared.get("commands", [])
            why = (
                "it is not allowed for this node's platform (add it to "
                "gateway.nodes.allow_commands) or its approval is pending (`node.pair.list`)"
                if declared
                else "the node does not offer it"
            )
            raise GatewayError.invalid(
                f"node {session.node_id[:12]} cannot run {command}: {why}",
                details={"code": "COMMAND_NOT_ALLOWED", "commands": session.commands},
            )
        default_ms = self._settings().gateway.nodes.invoke_timeout_ms
        timeout = min(max(timeout_ms if timeout_ms is not None else default_ms, 100), 600_000)
        invoke_id = str(uuid.uuid4())
        request: dict[str, Any] = {
            "id": invoke_id,
            "nodeId": session.node_id,
            "command": command,
            "timeoutMs": timeout,
        }
        if params is not None:
            request["paramsJSON"] = json.dumps(params)
        if idempotency_key:
            request["idempotencyKey"] = idempotency_key
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._invokes[invoke_id] = (session.node_id, future)
        session.invokes += 1
        _LOGGER.info("node.invoke %s on %s (%s)", command, session.node_id[:12], invoke_id[:8])
        if not session.conn.send_event(
            encode_event_body("node.invoke.request", request), droppable=False
        ):
            self._invokes.pop(invoke_id, None)
            raise GatewayError(ErrorCode.UNAVAILABLE, "the node's connection is closing")
        try:
            result = await asyncio.wait_for(future, timeout / 1000)
        except TimeoutError:
            raise GatewayError(
                ErrorCode.AGENT_TIMEOUT,
                f"node {session.node_id[:12]} did not answer {command} within {timeout} ms",
                details={"code": "NODE_INVOKE_TIMEOUT", "timeoutMs": timeout},
                retryable=True,
            ) from None
        finally:
            self._invokes.pop(invoke_id, None)
        return {"nodeId": session.node_id, "command": command, **result}

    def _by_name(self, name: str) -> NodeSession | None:
        """A connected node by a unique id prefix (8+ chars) or display name."""
        wanted = name.strip().lower()
        matches = [
            s
            for s in self.sessions.values()
            if (len(wanted) >= 8 and s.node_id.startswith(wanted))
            or str(s.client.get("displayName", "")).lower() == wanted
        ]
        return matches[0] if len(matches) == 1 else None

    def result(self, conn: Connection, params: dict[str, Any]) -> bool:
        """A node's `node.invoke.result`; False when nothing waits for it."""
        entry = self._invokes.get(params["id"])
        node_id = conn.node_id
        if entry is None or entry[0] != node_id or params["nodeId"] != node_id:
            return False
        future = entry[1]
        if future.done():
            return False
        payload: Any = params.get("payload")
        if payload is None and params.get("payloadJSON") is not None:
            text = params["payloadJSON"]
            if len(text) > _MAX_RESULT_BYTES:
                future.set_exception(
                    GatewayError(ErrorCode.UNAVAILABLE, "the node's answer is too large")
                )
                return True
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
        if params["ok"]:
            future.set_result({"ok": True, "payload": payload})
        else:
            error = params.get("error") or {}
            future.set_exception(
                GatewayError(
                    ErrorCode.UNAVAILABLE,
                    str(error.get("message") or "the node reported an error"),
                    details={"code": str(error.get("code") or "NODE_ERROR"), "nodeId": node_id},
                )
            )
        return True

    # ------------------------------------------------------------------ voice wake

    def _load_triggers(self) -> list[str]:
        try:
            data = json.loads(self._voicewake_path.read_text(encoding="utf-8"))
            triggers = [str(t) for t in data.get("triggers", []) if str(t).strip()]
            return triggers or list(DEFAULT_VOICEWAKE_TRIGGERS)
        except FileNotFoundError:
            return list(DEFAULT_VOICEWAKE_TRIGGERS)
        except (OSError, ValueError, AttributeError) as exc:
            _LOGGER.error("wake words in %s cannot be read (%s)", self._voicewake_path, exc)
            return list(DEFAULT_VOICEWAKE_TRIGGERS)

    def set_triggers(self, triggers: list[str]) -> list[str]:
        cleaned: list[str] = []
        for trigger in triggers:
            text = " ".join(trigger.split())[:64]
            if text and text.lower() not in (t.lower() for t in cleaned):
                cleaned.append(text)
        self.voicewake_triggers = cleaned[:32] or list(DEFAULT_VOICEWAKE_TRIGGERS)
        private_dir(self._voicewake_path.parent)
        atomic_write_text(self._voicewake_path, json.dumps({"triggers": self.voicewake_triggers}))
        self._events.broadcast("voicewake.changed", {"triggers": self.voicewake_triggers})
        return self.voicewake_triggers
