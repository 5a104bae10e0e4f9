"""moltis.secrets.*: the web app's way to put an API key in the secret store.

OpenClaw's own `secrets.store.*` allows only environment-style names (`ANTHROPIC_API_KEY`)
while ours are config names (`anthropic-api-key`), so these are Moltis methods under their
own prefix rather than a schema-breaking copy. Values go in and never come back out: `list`
gives names only. The gateway's own credential
(`gateway.auth.token_secret` / `password_secret`) cannot be changed here, since the page that
changes it would lock itself out; `moltis secrets set` does that.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from moltis_desktop.config.secrets import SecretStore, SecretStoreError
from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext

TABLE = MethodTable()

SecretName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class SecretsSetParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: SecretName
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]


class SecretsDeleteParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: SecretName


def _store(ctx: MethodContext) -> SecretStore:
    store = ctx.state.secrets
    if store is None:
        raise GatewayError(ErrorCode.UNAVAILABLE, "this gateway runs without a secret store")
    return store


def _guard(ctx: MethodContext, name: str) -> None:
    auth = ctx.settings.gateway.auth
    if name in (auth.token_secret, auth.password_secret):
        raise GatewayError.invalid(
            f"{name} is the gateway's own credential; change it with `moltis secrets set {name}`"
        )


async def _run(fn: Any, *args: Any) -> Any:
    try:
        # The keyring and the encrypted file block (D-Bus, scrypt): off the event loop.
        return await asyncio.to_thread(fn, *args)
    except SecretStoreError as exc:
        raise GatewayError(ErrorCode.UNAVAILABLE, exc.message) from None


def _providers_changed(ctx: MethodContext) -> bool:
    services = ctx.state.agent
    if services is None:
        return False
    services.models.registry.forget_credentials()
    return True


@TABLE.method("moltis.secrets.list", scope=Scope.ADMIN, params=EmptyParams)
async def secrets_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """The names in the secret store (never the values)."""
    names = await _run(_store(ctx).names)
    return {"names": sorted(names)}


@TABLE.method("moltis.secrets.set", scope=Scope.ADMIN, params=SecretsSetParams)
async def secrets_set(ctx: MethodContext, params: SecretsSetParams) -> dict[str, Any]:
    """Store a value; providers pick up a new key on their next request."""
    _guard(ctx, params.name)
    await _run(_store(ctx).set, params.name, params.value)
    return {"ok": True, "reloaded": _providers_changed(ctx)}


@TABLE.method("moltis.secrets.delete", scope=Scope.ADMIN, params=SecretsDeleteParams)
async def secrets_delete(ctx: MethodContext, params: SecretsDeleteParams) -> dict[str, Any]:
    _guard(ctx, params.name)
    existed = await _run(_store(ctx).delete, params.name)
    if not existed:
        raise GatewayError.invalid(f"no secret named {params.name}")
    return {"ok": True, "reloaded": _providers_changed(ctx)}
