"""node.* and voicewake.*: list, describe and rename nodes, invoke their commands, approve
their command surfaces, take their events; and the wake words nodes listen for."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.gateway.nodes import ADMIN_COMMANDS
from moltis_desktop.gateway.registry import EmptyParams, MethodTable, forbidden, has_scope
from moltis_desktop.protocol.constants import Role, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable(
    events=("node.pair.requested", "node.pair.resolved", "node.invoke.request", "voicewake.changed")
)
_LOGGER = logging.getLogger(__name__)
_NODE = (Role.NODE,)


class NodeIdParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    node_id: NonEmpty


class RenameParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    node_id: NonEmpty
    display_name: NonEmpty


class InvokeParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    node_id: NonEmpty
    command: NonEmpty
    idempotency_key: NonEmpty
    params: Any = None
    timeout_ms: int | None = None
    session_key: str | None = None
    turn_source_channel: str | None = None
    turn_source_to: str | None = None
    turn_source_account_id: str | None = None
    turn_source_thread_id: str | int | None = None


class InvokeError(msgspec.Struct, forbid_unknown_fields=True):
    code: str | None = None
    message: str | None = None


class InvokeResultParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    id: NonEmpty
    node_id: NonEmpty
    ok: bool
    payload: Any = None
    payload_json: str | None = msgspec.field(default=None, name="payloadJSON")
    error: InvokeError | None = None


class NodeEventParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    event: NonEmpty
    payload: Any = None
    payload_json: str | None = msgspec.field(default=None, name="payloadJSON")


class RequestParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    request_id: NonEmpty


class TriggersParams(msgspec.Struct, forbid_unknown_fields=True):
    triggers: list[str]


@TABLE.method("node.list", scope=Scope.READ, params=EmptyParams)
def node_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Connected and paired nodes."""
    return {"ts": ctx.clock.now_ms(), "nodes": ctx.nodes.list_nodes()}


@TABLE.method("node.describe", scope=Scope.READ, params=NodeIdParams)
def node_describe(ctx: MethodContext, params: NodeIdParams) -> dict[str, Any]:
    entry = ctx.nodes.entry(params.node_id)
    if entry is None:
        raise GatewayError.invalid(f"unknown node {params.node_id} (see `node.list`)")
    session = ctx.nodes.sessions.get(params.node_id)
    if session is not None:
        entry["declaredCommands"] = list(session.declared.get("commands", []))
        entry["pathEnv"] = session.declared.get("pathEnv")
        entry["invokes"] = session.invokes
        entry["events"] = sorted(session.events)
    return {k: v for k, v in entry.items() if v is not None}


@TABLE.method("node.rename", scope=Scope.PAIRING, params=RenameParams)
def node_rename(ctx: MethodContext, params: RenameParams) -> dict[str, Any]:
    name = " ".join(params.display_name.split())[:64]
    if not ctx.pairing.rename(params.node_id, name):
        raise GatewayError.invalid(
            f"unknown node {params.node_id}: only paired nodes can be renamed"
        )
    _LOGGER.info("node %s renamed", params.node_id[:12])
    return {"nodeId": params.node_id, "displayName": name}


@TABLE.method("node.invoke", scope=Scope.WRITE, params=InvokeParams, dedupe=True)
async def node_invoke(ctx: MethodContext, params: InvokeParams) -> dict[str, Any]:
    """Run a command on a node and wait for its answer (`timeoutMs`, default from
    `gateway.nodes.invoke_timeout_ms`). Commands that run programs need admin."""
    if params.command in ADMIN_COMMANDS and not has_scope(ctx.conn.scopes, Scope.ADMIN):
        raise forbidden(Scope.ADMIN)
    return await ctx.nodes.invoke(
        params.node_id,
        params.command,
        params.params,
        timeout_ms=params.timeout_ms,
        idempotency_key=params.idempotency_key,
    )


@TABLE.method("node.invoke.result", scope="node", roles=_NODE, params=InvokeResultParams)
def node_invoke_result(ctx: MethodContext, params: InvokeResultParams) -> dict[str, Any]:
    raw = msgspec.to_builtins(params)
    matched = ctx.nodes.result(ctx.conn, raw)
    if not matched:
        _LOGGER.info("node.invoke.result %s matched no call (late or not this node's)", params.id)
    return {"ok": True, "matched": matched}


@TABLE.method("node.event", scope="node", roles=_NODE, params=NodeEventParams)
def node_event(ctx: MethodContext, params: NodeEventParams) -> dict[str, Any]:
    """An event from a node (its host stats, a transcript, …), kept as the node's latest."""
    node_id = ctx.conn.node_id
    session = ctx.nodes.sessions.get(node_id or "")
    payload = params.payload
    if payload is None and params.payload_json is not None:
        try:
            payload = json.loads(params.payload_json)
        except ValueError:
            payload = params.payload_json
    if session is None:
        return {"ok": True, "event": params.event, "handled": False, "reason": "not registered"}
    session.events[params.event] = payload
    return {"ok": True, "event": params.event, "handled": True}


def _node_update(ctx: MethodContext, key: str, raw: Any) -> dict[str, Any]:
    node_id = ctx.conn.node_id or ""
    session = ctx.nodes.sessions.get(node_id)
    if session is not None and isinstance(raw, dict):
        session.events[key] = raw
    return {"nodeId": node_id}


@TABLE.method("node.runnerInventory.update", scope="node", roles=_NODE)
def node_runner_inventory(ctx: MethodContext, params: Any) -> dict[str, Any]:
    return _node_update(ctx, "runnerInventory", params)


@TABLE.method("node.skills.update", scope="node", roles=_NODE)
def node_skills(ctx: MethodContext, params: Any) -> dict[str, Any]:
    return {**_node_update(ctx, "skills", params), "skills": []}


@TABLE.method("node.pluginTools.update", scope="node", roles=_NODE)
def node_plugin_tools(ctx: MethodContext, params: Any) -> dict[str, Any]:
    return {**_node_update(ctx, "pluginTools", params), "tools": []}


@TABLE.method("node.pair.list", scope=Scope.PAIRING, params=EmptyParams)
def node_pair_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Nodes asking for more commands (pending) and the nodes with an approved surface."""
    nodes = ctx.nodes
    nodes._prune_pending()
    pending = sorted(nodes.pending_surfaces.values(), key=lambda r: -int(r["ts"]))
    paired = []
    for device_id, device in ctx.pairing.paired.items():
        surface = device.get("nodeSurface")
        if surface is None or "node" not in device.get("roles", []):
            continue
        paired.append(
            {
                "nodeId": device_id,
                "displayName": device.get("displayName"),
                "platform": device.get("platform"),
                "caps": surface.get("caps", []),
                "commands": surface.get("commands", []),
                "approvedAtMs": surface.get("approvedAtMs"),
            }
        )
    return {"pending": pending, "paired": paired}


def _resolve(ctx: MethodContext, request_id: str, approve: bool) -> dict[str, Any]:
    nodes = ctx.nodes
    request = nodes.pending_surfaces.get(request_id)
    if request is None:
        raise GatewayError.invalid("unknown or expired node pairing request (they last 5 minutes)")
    if approve:
        for scope in request["requiredApproveScopes"]:
            if not has_scope(ctx.conn.scopes, scope):
                raise forbidden(scope)
    nodes.resolve_surface(request_id, approve)
    return {"requestId": request_id, "nodeId": request["nodeId"],
            "decision": "approved" if approve else "rejected"}  # fmt: skip


@TABLE.method("node.pair.approve", scope=Scope.PAIRING, params=RequestParams)
def node_pair_approve(ctx: MethodContext, params: RequestParams) -> dict[str, Any]:
    return _resolve(ctx, params.request_id, approve=True)


@TABLE.method("node.pair.reject", scope=Scope.PAIRING, params=RequestParams)
def node_pair_reject(ctx: MethodContext, params: RequestParams) -> dict[str, Any]:
    return _resolve(ctx, params.request_id, approve=False)


@TABLE.method("node.pair.remove", scope=Scope.PAIRING, params=NodeIdParams)
def node_pair_remove(ctx: MethodContext, params: NodeIdParams) -> dict[str, Any]:
    """Take the node role away from a device: its node token stops working and its node
    connection closes (its other roles stay)."""
    store = ctx.pairing
    device = store.paired.get(params.node_id)
    if device is None or "node" not in device.get("roles", []):
        raise GatewayError.invalid(f"no paired node {params.node_id}")
    device["roles"] = [r for r in device.get("roles", []) if r != "node"]
    device.pop("nodeSurface", None)
    (device.get("tokens") or {}).pop("node", None)
    if device["roles"]:
        store.save()
    else:
        store.remove(params.node_id)
    session = ctx.nodes.sessions.get(params.node_id)
    if session is not None:
        session.conn.close_soon(1008, "node removed")
    _LOGGER.info("node %s removed", params.node_id[:12])
    return {"nodeId": params.node_id, "removed": True}


@TABLE.method("voicewake.get", scope=Scope.READ, params=EmptyParams)
def voicewake_get(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    return {"triggers": list(ctx.nodes.voicewake_triggers)}


@TABLE.method("voicewake.set", scope=Scope.WRITE, params=TriggersParams)
def voicewake_set(ctx: MethodContext, params: TriggersParams) -> dict[str, Any]:
    """Change the wake words; every client and node hears `voicewake.changed`."""
    return {"triggers": ctx.nodes.set_triggers(params.triggers)}
