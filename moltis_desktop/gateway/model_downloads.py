"""Model downloads the gateway starts for a client (`moltis.voice.models.download`,
`moltis.models.local.download`): the manager keeps the task, and its progress goes to
operators as throttled `<area>.progress` events, ending with one whose `state` is `done`
or `error`.

The payload: `{id, done, total, state: "downloading"|"done"|"error", error?}` (bytes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from moltis_desktop.core.errors import MoltisError

if TYPE_CHECKING:
    from pathlib import Path

    from moltis_desktop.gateway.broadcast import EventSink
    from moltis_desktop.modelstore.manager import ModelManager

_LOGGER = logging.getLogger(__name__)

PROGRESS_PER_S = 10
"""Most progress events per second and download (the final one always goes out)."""


def start_download(
    manager: ModelManager[Any], model_id: str, events: EventSink, event: str
) -> dict[str, Any]:
    """Start downloading `model_id` unless it is installed or on its way; the answer to the
    download method. An unknown id raises the manager's error (an invalid request)."""
    status = manager.status(model_id)
    if status.state and status.joined:
        return {"id": status.id, "state": status.state, "path": str(status.path)}
    if status.id in manager.downloading:
        return {"id": status.id, "started": False, "state": "downloading"}
    reporter = ProgressReporter(events, event, status.id, manager.wording.noun)
    task = manager.start_download(status.id, reporter)
    task.add_done_callback(reporter.finished)
    _LOGGER.info("%s %s: download started", manager.wording.noun, status.id)
    return {"id": status.id, "started": True}


class ProgressReporter:
    """Turns a download's byte counts into throttled progress events."""

    def __init__(self, events: EventSink, event: str, model_id: str, noun: str) -> None:
        self.events = events
        self.event = event
        self.model_id = model_id
        self.noun = noun
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
            if not isinstance(exc, MoltisError):
                _LOGGER.error("%s %s: download failed", self.noun, self.model_id, exc_info=exc)
            _LOGGER.warning("%s %s: %s", self.noun, self.model_id, exc)
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
        self.events.broadcast(self.event, payload, droppable=state == "downloading")
