"""The laptop voice loop's events as gateway events: `talk.mode` as OpenClaw has it, the
rest as `moltis.voice.state` (`{kind, …}`) for the tray, the web app and scripts."""

from __future__ import annotations

from typing import Any

from moltis_desktop.core.clock import Clock
from moltis_desktop.gateway.broadcast import EventSink


def publish_voice_event(events: EventSink, clock: Clock, kind: str, data: dict[str, Any]) -> None:
    """Publish one event of the voice loop (an observer of the voice service)."""
    now = clock.now_ms()
    if kind == "talk.mode":
        payload = {"enabled": data.get("enabled", False), "phase": data.get("phase"), "ts": now}
        events.broadcast("talk.mode", payload, droppable=True)
        return
    events.broadcast("moltis.voice.state", {"kind": kind, **data, "ts": now}, droppable=True)
