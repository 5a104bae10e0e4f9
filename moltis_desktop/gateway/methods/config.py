"""config.get, config.schema, config.set, config.patch, config.apply."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from moltis_desktop.config.loader import ConfigError, merge_patch, parse_text
from moltis_desktop.config.store import (
    REDACTED_SENTINEL,
    ConfigConflictError,
    ConfigSnapshot,
    redact_text,
    redact_tree,
    text_hash,
)
from moltis_desktop.gateway.registry import EmptyParams, MethodTable, has_scope
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.gateway.state import GatewayState

TABLE = MethodTable(events=("config.changed",))
_BASE_HASH_REQUIRED = "config base hash required; re-run config.get and retry"
_BASE_HASH_STALE = "config changed since last load; re-run config.get and retry"


class ConfigSetParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    raw: NonEmpty
    """The whole new config file, in the file's own format."""
    base_hash: NonEmpty | None = None
    """`hash` from the config.get this edit started from."""


class DeliveryContext(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    channel: str | None = None
    to: str | None = None
    account_id: str | None = None
    thread_id: str | float | None = None


class ConfigApplyParams(ConfigSetParams, forbid_unknown_fields=True, rename="camel"):
    session_key: str | None = None
    delivery_context: DeliveryContext | None = None
    note: str | None = None
    restart_delay_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Delay before a listener change (bind/port) takes effect, in ms (default 2000)."""


class ConfigPatchParams(ConfigApplyParams, forbid_unknown_fields=True, rename="camel"):
    replace_paths: Annotated[list[NonEmpty], msgspec.Meta(max_length=256)] | None = None


def _issues(exc: ConfigError) -> list[dict[str, str]]:
    return [{"path": exc.key or "<root>", "message": exc.detail}]


def _invalid(exc: ConfigError) -> GatewayError:
    if isinstance(exc, ConfigConflictError):
        return GatewayError.invalid(_BASE_HASH_STALE)
    where = f"{exc.key}: " if exc.key else ""
    return GatewayError.invalid(
        f"invalid config: {where}{exc.detail}", details={"issues": _issues(exc)}
    )


@TABLE.method("config.get", scope=Scope.READ, params=EmptyParams)
def config_get(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """The config file (raw text + hash) and the config in effect; secret values written in
    the file are shown as the redaction marker.

    A file that parses is redacted by its keys (`SECRET_KEY_NAMES`). One that does not can
    only be redacted by guessing (`redact_broken_text`: secret-looking keys, known secret
    values, token shapes), which a secret under an innocent key or in an odd layout
    escapes; so its text goes only to `operator.admin` callers (who may rewrite the file
    anyway, and need the text to fix it). Others (a read-only phone) get `raw: null`, with
    the issues and the config in effect.
    """
    store = ctx.config
    try:
        exists, raw = True, store.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        exists, raw = False, ""
    except OSError as exc:
        raise GatewayError(ErrorCode.UNAVAILABLE, f"cannot read {store.path}: {exc}") from None
    current = store.current
    error = store.error
    parsed: Any
    try:
        parsed = redact_tree(parse_text(raw, store.format, store.path))
    except ConfigError:
        parsed = None
    shown = exists and (parsed is not None or has_scope(ctx.conn.scopes, Scope.ADMIN))
    effective = redact_tree(current.effective)
    return {
        "path": str(store.path),
        "format": store.format,
        "exists": exists,
        "raw": redact_text(raw, store.format) if shown else None,
        "parsed": parsed,
        "resolved": effective,
        "config": effective,
        "valid": error is None,
        "source": current.source,
        "hash": text_hash(raw),
        "issues": _issues(error) if error is not None else [],
        "warnings": list(current.warnings),
    }


@TABLE.method("config.schema", scope=Scope.READ, params=EmptyParams)
def config_schema(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """The config's JSON Schema and help for every key."""
    from moltis_desktop.config.schema import config_schema as build

    schema = build()
    return {
        **schema,
        "version": ctx.state.version,
        "generatedAt": datetime.datetime.now(datetime.UTC).isoformat(),
    }


def _require_base(gateway: GatewayState, base_hash: str | None) -> None:
    if base_hash is None and gateway.config.path.exists():
        raise GatewayError.invalid(_BASE_HASH_REQUIRED)


def _result(snap: ConfigSnapshot) -> dict[str, Any]:
    return {
        "ok": True,
        "path": str(snap.path),
        "hash": snap.hash,
        "config": redact_tree(snap.effective),
    }


async def _write(gateway: GatewayState, raw: str, base_hash: str | None) -> ConfigSnapshot:
    async with gateway.config_lock:
        try:
            return gateway.config.write_raw(raw, base_hash)
        except ConfigError as exc:
            raise _invalid(exc) from None


@TABLE.method("config.set", scope=Scope.ADMIN, params=ConfigSetParams)
async def config_set(ctx: MethodContext, params: ConfigSetParams) -> dict[str, Any]:
    """Replace the config file (validated first; refused when `baseHash` is stale)."""
    _require_base(ctx.state, params.base_hash)
    snap = await _write(ctx.state, params.raw, params.base_hash)
    return _result(snap)


def _restart(
    gateway: GatewayState, old: ConfigSnapshot, new: ConfigSnapshot, delay_ms: int | None
) -> dict[str, Any] | None:
    keys = gateway.config.restart_keys(old.settings, new.settings)
    if not keys:
        return None
    delay = 2000 if delay_ms is None else min(delay_ms, 60_000)
    gateway.request_rebind(delay / 1000)
    return {"ok": True, "keys": keys, "delayMs": delay, "mode": "rebind"}


@TABLE.method("config.apply", scope=Scope.ADMIN, params=ConfigApplyParams)
async def config_apply(ctx: MethodContext, params: ConfigApplyParams) -> dict[str, Any]:
    """Replace the config file and apply it now; a bind/port change rebinds the listener
    after `restartDelayMs`."""
    _require_base(ctx.state, params.base_hash)
    old = ctx.config.current
    snap = await _write(ctx.state, params.raw, params.base_hash)
    result = _result(snap)
    restart = _restart(ctx.state, old, snap, params.restart_delay_ms)
    if restart is not None:
        result["restart"] = restart
    return result


def _changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(_changed_paths(before.get(key), after.get(key), path))
        return out
    return [] if before == after else [prefix or "<root>"]


@TABLE.method("config.patch", scope=Scope.ADMIN, params=ConfigPatchParams)
async def config_patch(ctx: MethodContext, params: ConfigPatchParams) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7396: `null` deletes) to the config file, keeping its
    comments (TOML), and apply it now."""
    gateway = ctx.state
    try:
        patch = json.loads(params.raw)
    except ValueError as exc:
        raise GatewayError.invalid(f"config.patch raw must be a JSON object: {exc}") from None
    if not isinstance(patch, dict):
        raise GatewayError.invalid("config.patch raw must be an object")
    if REDACTED_SENTINEL in params.raw:
        raise GatewayError.invalid(
            f'Reserved redaction sentinel "{REDACTED_SENTINEL}" is not valid in a patch'
        )
    store = gateway.config
    async with gateway.config_lock:
        try:
            exists, current_raw = (
                store.path.exists(),
                (store.path.read_text(encoding="utf-8") if store.path.exists() else ""),
            )
            before = parse_text(current_raw, store.format, store.path)
        except (OSError, ConfigError) as exc:
            raise GatewayError.invalid(f"{exc}; fix the config file before patching") from None
        changed = _changed_paths(before, merge_patch(before, patch))
        if not changed:
            if params.base_hash is not None and params.base_hash != text_hash(current_raw):
                raise GatewayError.invalid(_BASE_HASH_STALE)
            return {
                "ok": True,
                "noop": True,
                "changedPaths": [],
                "path": str(store.path),
                "config": redact_tree(store.current.effective),
            }
        if params.base_hash is None and exists:
            raise GatewayError.invalid(_BASE_HASH_REQUIRED)
        old = store.current
        try:
            snap = store.patch(patch, params.base_hash)
        except ConfigError as exc:
            raise _invalid(exc) from None
    result = _result(snap)
    result["changedPaths"] = changed
    restart = _restart(gateway, old, snap, params.restart_delay_ms)
    if restart is not None:
        result["restart"] = restart
    return result
