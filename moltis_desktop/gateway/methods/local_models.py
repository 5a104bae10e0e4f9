"""moltis.models.local.*: list, download and remove the embedded local chat models.

A download runs in the background (the manager keeps the task); it answers at once, and
its progress goes to operators as `moltis.models.local.progress` events
(`{id, done, total, state: "downloading"|"done"|"error", error?}`, at most ten a second,
see `gateway/model_downloads.py`). A model that ships in package parts is joined instead
(the same events count the bytes joined).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.gateway.model_downloads import start_download
from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.providers.local_catalog import LocalModelManager

PROGRESS_EVENT = "moltis.models.local.progress"
TABLE = MethodTable(events=(PROGRESS_EVENT,))


class DownloadParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str = ""
    """The model; empty: the one recommended for the gateway machine's RAM."""


class RemoveParams(msgspec.Struct, forbid_unknown_fields=True):
    id: str


def _manager(ctx: MethodContext) -> LocalModelManager:
    manager: LocalModelManager | None = ctx.state.local_models
    if manager is None:
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            "local models are not managed by this gateway; use `moltis models local` on the "
            "gateway's machine",
        )
    return manager


@TABLE.method("moltis.models.local.list", scope=Scope.READ, params=EmptyParams)
def local_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Every local model with its state (`downloaded`, `package` or ""), the one the
    provider would run (`active`: `models.local.model`, else the best installed) and the
    one recommended for this machine's RAM."""
    manager = _manager(ctx)
    configured = ctx.state.settings.models.local.model.strip()
    return {
        "models": [status.to_dict() for status in manager.list()],
        "active": configured or manager.best_installed() or "",
        "recommended": manager.recommended(),
        "downloading": sorted(manager.downloading),
    }


@TABLE.method("moltis.models.local.download", scope=Scope.ADMIN, params=DownloadParams)
def local_download(ctx: MethodContext, params: DownloadParams) -> dict[str, Any]:
    """Start downloading a model (answers at once; `moltis.models.local.progress` follows)."""
    manager = _manager(ctx)
    model_id = params.id.strip() or manager.recommended()
    # An unknown id: LocalModelError, an invalid request naming close matches.
    return start_download(manager, model_id, ctx.events, PROGRESS_EVENT)


@TABLE.method("moltis.models.local.remove", scope=Scope.ADMIN, params=RemoveParams)
def local_remove(ctx: MethodContext, params: RemoveParams) -> dict[str, Any]:
    """Delete a downloaded model (a package's models stay: uninstall the package)."""
    return {"id": params.id, "removed": _manager(ctx).remove(params.id)}
