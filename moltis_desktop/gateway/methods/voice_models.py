"""moltis.voice.models.*: list, download and remove the voice models (speech, voices, wake words).

A download runs in the background (the manager keeps the task); its progress goes to
operators as `moltis.voice.models.progress` events, at most `PROGRESS_PER_S` a second, and ends
with one whose `state` is `done` or `error`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError, NonEmpty
from moltis_desktop.voice.errors import VoiceError

if TYPE_CHECKING:
    from pathlib import Path

    from moltis_desktop.gateway.broadcast import EventSink
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.voice.models import ModelManager

TABLE = MethodTable(events=("moltis.voice.models.progress",))
_LOGGER = logging.getLogger(__name__)

PROGRESS_EVENT = "moltis.voice.models.progress"
PROGRESS_PER_S = 10
"""Most progress events per second and download (the final one always goes out)."""


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
    manager = _manager(ctx)
    status = manager.status(params.id)  # an unknown id: VoiceError, an invalid request
    if status.state:
        return {"id": status.id, "state": status.state, "path": str(status.path)}
    if status.id in manager.downloading:
        return {"id": status.id, "started": False, "state": "downloading"}
    reporter = _ProgressReporter(ctx.events, status.id)
    task = manager.start_download(status.id, reporter)
    task.add_done_callback(reporter.finished)
    _LOGGER.info("voice model %s: download started", status.id)
    return {"id": status.id, "started": True}


@TABLE.method("moltis.voice.models.remove", scope=Scope.ADMIN, params=ModelIdParams)
def models_remove(ctx: MethodContext, params: ModelIdParams) -> dict[str, Any]:
    """Delete a downloaded model (a package's models stay: uninstall the package)."""
    # VoiceError (unknown id, a package's model) answers as an invalid request.
    return {"id": params.id, "removed": _manager(ctx).remove(params.id)}


class _ProgressReporter:
    """Turns a download's byte counts into throttled `moltis.voice.models.progress` events."""

    def __init__(self, events: EventSink, model_id: str) -> None:
        self.events = events
        self.model_id = model_id
        self.done = 0
        self.total = 0
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = time.monotonic()
        if now - self._last < 1 / PROGRESS_PER_S:
            return
        self._last = now
        self._send("downloading")

    def finished(self, task: asyncio.Task[Path]) -> None:
        if task.cancelled():
            self._send("error", "the download was cancelled (the gateway is stopping)")
        elif (exc := task.exception()) is not None:
            if not isinstance(exc, VoiceError):
                _LOGGER.error("voice model %s: download failed", self.model_id, exc_info=exc)
            _LOGGER.warning("voice model %s: %s", self.model_id, exc)
            self._send("error", str(exc))
        else:
            self.done = self.total = max(self.done, self.total)
            self._send("done")

    def _send(self, state: str, error: str | None = None) -> None:
        payload: dict[str, Any] = {
            "id": self.model_id,
            "done": self.done,
            "total": self.total,
            "state": state,
        }
        if error is not None:
            payload["error"] = error
        # Intermediate figures may be dropped by a slow client; the outcome may not.
        self.events.broadcast(PROGRESS_EVENT, payload, droppable=state == "downloading")
