"""Events to connected clients: encoded once, each connection adding its own `seq`.

`EventSink` is what a part of the gateway needs to publish an event; `Broadcaster` is the
one implementation (every connection allowed to see the event, plus in-process listeners
such as the desktop app's tray).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from moltis_desktop.gateway.registry import operator_may
from moltis_desktop.protocol.constants import Scope
from moltis_desktop.protocol.frames import encode_event_body

if TYPE_CHECKING:
    from moltis_desktop.gateway.connection import Connection

_LOGGER = logging.getLogger(__name__)

BASE_EVENTS = ("connect.challenge", "tick", "shutdown", "health", "presence")
"""Events of the gateway itself; each method table declares the events of its area."""
CAPABILITIES = ("published-model-catalog",)
"""Capabilities this gateway declares (`hello-ok.features.capabilities`)."""
UNGATED_EVENTS = frozenset({"tick", "health", "shutdown", "connect.challenge", "voicewake.changed"})
"""Events every connection gets, nodes included (nodes listen for the wake words)."""

Listener = Callable[[str, Any], None]
"""An in-process observer of every event: called with (event, payload); must not block."""


class EventSink(Protocol):
    """Publishes an event to the clients allowed to see it."""

    def broadcast(
        self,
        event: str,
        payload: Any = None,
        *,
        droppable: bool = False,
        scope: str | None = None,
        state_version: bool = False,
    ) -> int: ...


class Broadcaster:
    """Sends events to every connection allowed to see them, and to in-process listeners."""

    def __init__(
        self, connections: set[Connection], state_version: Callable[[], dict[str, int]]
    ) -> None:
        self._connections = connections
        self._state_version = state_version
        self.listeners: list[Listener] = []
        """In-process observers of every event (the desktop app's tray and notifications)."""

    def broadcast(
        self,
        event: str,
        payload: Any = None,
        *,
        droppable: bool = False,
        scope: str | None = None,
        state_version: bool = False,
    ) -> int:
        """Send an event to every connection allowed to see it; returns how many got it.

        The frame is encoded once; each connection adds its own `seq`. Events other than
        tick/health/shutdown need read scope (`scope`), and reach operators only.
        """
        for listener in tuple(self.listeners):
            try:
                listener(event, payload)
            except Exception:  # an observer's bug must not break the broadcast
                _LOGGER.exception("event listener failed on %s", event)
        version = self._state_version() if state_version else None
        body = encode_event_body(event, payload, version)
        needed = scope if scope is not None else (None if event in UNGATED_EVENTS else Scope.READ)
        sent = 0
        for conn in self._connections:
            if needed is not None and not operator_may(conn.role, conn.scopes, needed):
                continue
            if conn.send_event(body, droppable=droppable):
                sent += 1
        return sent
