"""agents.list, models.list, channels.status: what this gateway offers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import Scope

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable()


@TABLE.method("agents.list", scope=Scope.READ, params=EmptyParams)
def agents_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """The configured agents (`agents.list` in the config; `main` by default)."""
    settings = ctx.settings.agents
    agents = []
    for agent in settings.list:
        entry: dict[str, Any] = {
            "id": agent.id,
            "workspace": str(
                Path(agent.workspace).expanduser()
                if agent.workspace
                else ctx.state.state_dir / "workspace" / agent.id
            ),
            "workspaceGit": False,
        }
        if agent.name:
            entry["name"] = agent.name
        if agent.model:
            entry["model"] = {"primary": agent.model}
        agents.append(entry)
    return {
        "defaultId": settings.default,
        "ownership": "sole",
        "selectionRequired": len(agents) > 1,
        "mainKey": ctx.settings.session.main_key,
        "scope": "per-sender",
        "agents": agents,
    }


class ModelsListParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    agent_id: str | None = None
    include_provider_capabilities: bool | None = None
    prepared_only: bool | None = None
    refresh: bool | None = None
    view: Literal["default", "configured", "provider-config", "all"] | None = None
    include_details: bool | None = None
    """Sent by openclaw 2026.9.6 (newer than the published 2026.9.1 schema)."""


@TABLE.method("models.list", scope=Scope.READ, params=ModelsListParams)
async def models_list(ctx: MethodContext, params: ModelsListParams) -> dict[str, Any]:
    """The published model catalogue: the providers' models (discovered, cached, refreshed
    in the background) merged with `models.catalog` and the providers' configured models."""
    services = ctx.state.agent
    if services is None:
        return {"models": _config_models(ctx)}
    catalog = services.models.catalog
    if params.refresh:
        await catalog.refresh(force=True)
    models = catalog.entries()
    seen = {(m["provider"], m["id"]) for m in models}
    models += [m for m in _config_models(ctx) if (m["provider"], m["id"]) not in seen]
    return {"models": models}


def _config_models(ctx: MethodContext) -> list[dict[str, Any]]:
    models = []
    for model in ctx.settings.models.catalog:
        entry: dict[str, Any] = {
            "id": model.id,
            "name": model.name or model.id,
            "provider": model.provider,
            "input": list(model.input),
            "reasoning": model.reasoning,
        }
        if model.context_window > 0:
            entry["contextWindow"] = model.context_window
        models.append(entry)
    return models


class ChannelsStatusParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    probe: bool | None = None
    timeout_ms: int | None = None
    channel: str | None = None


@TABLE.method("channels.status", scope=Scope.READ, params=ChannelsStatusParams)
def channels_status(ctx: MethodContext, params: ChannelsStatusParams) -> dict[str, Any]:
    """Messaging channels and their accounts (none are configured in this version)."""
    now = ctx.clock.now_ms()
    return {
        "ts": now,
        "channelOrder": [],
        "channelLabels": {},
        "channelDetailLabels": {},
        "channelSystemImages": {},
        "channelMeta": [],
        "channels": {},
        "channelAccounts": {},
        "channelDefaultAccountId": {},
        "eventLoop": ctx.state.loop_monitor.snapshot(now),
    }
