"""moltis.voice.models.*: list, download and remove the voice models (speech, voices, wake words).

A download runs in the background (the manager keeps the task); its progress goes to
operators as `moltis.voice.models.progress` events (see `gateway/model_downloads.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.gateway.model_downloads import start_download
from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.voice.models import ModelManager

TABLE = MethodTable(events=("moltis.voice.models.progress",))

PROGRESS_EVENT = "moltis.voice.models.progress"


class ModelIdParams(msgspec.Struct, forbid_unknown_fields=True):
    id: NonEmpty


def _manager(ctx: MethodContext) -> ModelManager:
    manager: ModelManager | None = ctx.state.voice_models
    if manager is None:
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            "voice models are not available in this gateway (it runs without the voice "
            "service); use `moltis models voice` on the gateway's machine",
        )
    return manager


@TABLE.method("moltis.voice.models.list", scope=Scope.READ, params=EmptyParams)
def models_list(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Every known model, with its state (`downloaded`, `package` or "") and path."""
    return {"models": [status.to_dict() for status in _manager(ctx).list()]}


@TABLE.method("moltis.voice.models.download", scope=Scope.ADMIN, params=ModelIdParams)
def models_download(ctx: MethodContext, params: ModelIdParams) -> dict[str, Any]:
    """Start downloading a model (answers at once; `moltis.voice.models.progress` follows)."""
    # An unknown id: VoiceError, an invalid request.
    return start_download(_manager(ctx), params.id, ctx.events, PROGRESS_EVENT)


@TABLE.method("moltis.voice.models.remove", scope=Scope.ADMIN, params=ModelIdParams)
def models_remove(ctx: MethodContext, params: ModelIdParams) -> dict[str, Any]:
    """Delete a downloaded model (a package's models stay: uninstall the package)."""
    # VoiceError (unknown id, a package's model) answers as an invalid request.
    return {"id": params.id, "removed": _manager(ctx).remove(params.id)}
