"""sessions.list, sessions.preview, sessions.patch, sessions.reset, sessions.delete,
sessions.compact, usage.status, usage.cost."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.gateway.registry import MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty

if TYPE_CHECKING:
    from moltis_desktop.agent.service import ChatService
    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable(events=("sessions.changed",))


def _require(chat: ChatService, key: str) -> Any:
    entry = chat.sessions.entry(key)
    if entry is None:
        raise GatewayError.invalid(f"no session {key!r} (see sessions.list)")
    return entry


class SessionsListParams(msgspec.Struct, rename="camel"):
    limit: Annotated[int, msgspec.Meta(ge=1)] = 100
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    active_minutes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    agent_id: str | None = None
    search: str | None = None
    label: str | None = None
    include_last_message: bool | None = None


@TABLE.method("sessions.list", scope=Scope.READ, params=SessionsListParams)
def sessions_list(ctx: MethodContext, params: SessionsListParams) -> dict[str, Any]:
    """Sessions, most recently updated first."""
    chat = ctx.chat
    entries = chat.sessions.list(
        agent_id=params.agent_id,
        limit=params.offset + params.limit,
        active_minutes=params.active_minutes,
        search=params.search,
        label=params.label,
    )
    page = entries[params.offset : params.offset + params.limit]
    last: dict[str, dict[str, Any]] = {}
    if params.include_last_message and page:
        for preview in chat.sessions.preview([e.key for e in page], limit=1, max_chars=160):
            if preview["items"]:
                last[preview["key"]] = preview["items"][-1]
    agent = chat.agent(params.agent_id)
    try:
        ref = chat.model_for(agent)
    except MoltisError:
        ref = ""
    provider, _, model = ref.partition("/")
    sessions = []
    for entry in page:
        item = entry.to_dict()
        item.setdefault("kind", "direct")
        if entry.key in last:
            item["lastMessagePreview"] = last[entry.key]
        sessions.append(item)
    return {
        "ts": ctx.clock.now_ms(),
        "path": str(chat.state_dir / "agents"),
        "count": len(sessions),
        "totalCount": len(entries),
        "limitApplied": params.limit,
        "hasMore": len(entries) > params.offset + params.limit,
        "nextOffset": None,
        "defaults": {
            "modelProvider": provider or None,
            "model": model or None,
            "contextTokens": None,
        },
        "sessions": sessions,
    }


class SessionsPreviewParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    keys: Annotated[list[NonEmpty], msgspec.Meta(min_length=1)]
    limit: Annotated[int, msgspec.Meta(ge=1)] = 12
    max_chars: Annotated[int, msgspec.Meta(ge=20)] = 240


@TABLE.method("sessions.preview", scope=Scope.READ, params=SessionsPreviewParams)
def sessions_preview(ctx: MethodContext, params: SessionsPreviewParams) -> dict[str, Any]:
    """The last messages of some sessions, shortened."""
    chat = ctx.chat
    keys = [chat.session_key(k) for k in params.keys]
    return {
        "ts": ctx.clock.now_ms(),
        "previews": chat.sessions.preview(keys, limit=params.limit, max_chars=params.max_chars),
    }


_PATCHABLE = {
    "label",
    "thinkingLevel",
    "verboseLevel",
    "reasoningLevel",
    "responseUsage",
    "elevatedLevel",
    "execHost",
    "execSecurity",
    "execAsk",
    "execNode",
    "model",
    "sendPolicy",
    "groupActivation",
    "displayName",
}


@TABLE.method("sessions.patch", scope=Scope.WRITE)
def sessions_patch(ctx: MethodContext, params: Any) -> dict[str, Any]:
    """Change a session's settings (`null` clears one). `model` sets the session's model."""
    chat = ctx.chat
    if not isinstance(params, dict) or not isinstance(params.get("key"), str):
        raise GatewayError.invalid("invalid sessions.patch params: key required")
    key = chat.session_key(params["key"], params.get("agentId"))
    chat.sessions.get_or_create(key)
    fields: dict[str, Any] = {}
    for name, value in params.items():
        if name in ("key", "agentId") or name.startswith("expected"):
            continue
        if name not in _PATCHABLE:
            raise GatewayError.invalid(
                f"sessions.patch cannot change {name!r}; it changes {', '.join(sorted(_PATCHABLE))}"
            )
        if name == "model":
            ref = value
            if value is not None:
                try:
                    ref = chat.check_model(str(value), chat.agent_of(key))
                except MoltisError as exc:
                    raise GatewayError.invalid(exc.message) from None
            fields["modelOverride"] = ref
        else:
            fields[name] = value
    entry = chat.sessions.patch(key, **fields)  # the store announces `sessions.changed`
    return {"ok": True, "key": key, "entry": entry.to_dict()}


class SessionsResetParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    key: NonEmpty
    agent_id: str | None = None
    reason: str | None = None


@TABLE.method("sessions.reset", scope=Scope.ADMIN, params=SessionsResetParams)
async def sessions_reset(ctx: MethodContext, params: SessionsResetParams) -> dict[str, Any]:
    """Start the session over (its transcript is archived, not deleted)."""
    chat = ctx.chat
    key = chat.session_key(params.key, params.agent_id)
    _require(chat, key)
    await chat.runs.abort(key)
    session_id = chat.sessions.reset(key)
    return {"ok": True, "key": key, "sessionId": session_id}


class SessionsDeleteParams(msgspec.Struct, rename="camel"):
    key: NonEmpty
    agent_id: str | None = None
    delete_transcript: bool = False


@TABLE.method("sessions.delete", scope=Scope.ADMIN, params=SessionsDeleteParams)
async def sessions_delete(ctx: MethodContext, params: SessionsDeleteParams) -> dict[str, Any]:
    """Remove a session from the index; its transcript is archived unless
    `deleteTranscript`."""
    chat = ctx.chat
    key = chat.session_key(params.key, params.agent_id)
    entry = chat.sessions.entry(key)
    await chat.runs.abort(key)
    archived: list[str] = []
    if entry is not None and not params.delete_transcript:
        path = chat.sessions.transcript_path(key)
        if path is not None:
            archived.append(str(path))
    deleted = chat.sessions.delete(key, delete_transcript=params.delete_transcript)
    return {"ok": True, "key": key, "deleted": deleted, "archived": archived if deleted else []}


class SessionsCompactParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    key: NonEmpty
    agent_id: str | None = None
    max_lines: int | None = None


@TABLE.method("sessions.compact", scope=Scope.ADMIN, params=SessionsCompactParams)
async def sessions_compact(ctx: MethodContext, params: SessionsCompactParams) -> dict[str, Any]:
    """Summarise the session's older turns now, with its model."""
    from moltis_desktop.agent.service import compaction_text

    chat = ctx.chat
    key = chat.session_key(params.key, params.agent_id)
    _require(chat, key)
    try:
        compacted = await chat.compact(key)
    except MoltisError as exc:
        raise GatewayError(ErrorCode.UNAVAILABLE, exc.message) from None
    return {
        "ok": True,
        "key": key,
        "compacted": compacted is not None,
        "message": compaction_text(compacted),
    }


# ---------------------------------------------------------------------------- usage


def _priced(model: str, totals: Any, prices: Any) -> dict[str, Any]:
    from moltis_desktop.agent.service import totals_cost

    return {**totals.to_dict(), "cost": round(totals_cost(model, totals, prices), 6)}


@TABLE.method("usage.status", scope=Scope.READ)
def usage_status(ctx: MethodContext, params: Any) -> dict[str, Any]:
    """Today's and this month's tokens per provider and model."""
    chat = ctx.chat
    today = datetime.date.today()
    prices = ctx.settings.usage.prices
    day = chat.sessions.usage.summarize(today, today)
    month = chat.sessions.usage.summarize(today.replace(day=1), today)
    providers: dict[str, dict[str, Any]] = {}
    for model, totals in month.by_model.items():
        provider = model.partition("/")[0]
        entry = providers.setdefault(provider, {"provider": provider, "models": []})
        entry["models"].append(
            {
                "model": model,
                "month": _priced(model, totals, prices),
                "today": _priced(model, day.by_model[model], prices)
                if model in day.by_model
                else None,
            }
        )
    return {
        "updatedAt": ctx.clock.now_ms(),
        "providers": list(providers.values()),
        "today": day.totals.to_dict(),
        "month": month.totals.to_dict(),
    }


class UsageCostParams(msgspec.Struct, rename="camel"):
    start_date: str | None = None
    end_date: str | None = None
    days: Annotated[int, msgspec.Meta(ge=1, le=366)] | None = None
    session_key: str | None = None
    agent_id: str | None = None


@TABLE.method("usage.cost", scope=Scope.READ, params=UsageCostParams)
def usage_cost(ctx: MethodContext, params: UsageCostParams) -> dict[str, Any]:
    """Tokens and cost per day and per model over a date range (default: the last 30 days),
    priced with the built-in table and `usage.prices`."""
    chat = ctx.chat
    try:
        end = (
            datetime.date.fromisoformat(params.end_date)
            if params.end_date
            else datetime.date.today()
        )
        start = (
            datetime.date.fromisoformat(params.start_date)
            if params.start_date
            else end - datetime.timedelta(days=(params.days or 30) - 1)
        )
    except ValueError:
        raise GatewayError.invalid("startDate and endDate are YYYY-MM-DD dates") from None
    session = chat.session_key(params.session_key) if params.session_key else None
    summary = chat.sessions.usage.summarize(
        start, end, agent_id=params.agent_id, session_key=session
    )
    prices = ctx.settings.usage.prices
    by_model = [{"model": m, **_priced(m, t, prices)} for m, t in sorted(summary.by_model.items())]
    daily = []
    for day, models in sorted(summary.by_day_model.items()):
        priced = [_priced(m, t, prices) for m, t in models.items()]
        daily.append(
            {
                "date": day,
                **summary.by_day[day].to_dict(),
                "cost": round(sum(p["cost"] for p in priced), 6),
            }
        )
    return {
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "totals": {**summary.totals.to_dict(), "cost": round(sum(m["cost"] for m in by_model), 6)},
        "daily": daily,
        "byModel": by_model,
    }
