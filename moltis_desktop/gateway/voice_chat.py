"""Voice's link to the assistant: a spoken question goes through the same chat path as a
typed `chat.send` (ChatService.send with the gateway's chat event bridge), so every
connected chat window shows the turn as it streams, and the reply text comes back to be
spoken. Also: the voice loop's events as gateway events."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from moltis_desktop.agent.loop import RunAborted, RunFailed

if TYPE_CHECKING:
    from moltis_desktop.gateway.server import GatewayServer

_LOGGER = logging.getLogger(__name__)


async def ask_assistant(gateway: GatewayServer, text: str) -> str:
    """Send `text` to the voice session (`voice.talk.session_key`) and return the reply."""
    from moltis_desktop.gateway.methods.chat import send_message
    from moltis_desktop.voice.errors import VoiceError

    services = gateway.services
    if services is None:
        raise VoiceError("the assistant is still starting; ask again in a moment")
    chat = services.chat
    settings = gateway.settings.voice.talk
    run_id = f"voice-{uuid.uuid4()}"
    key = chat.session_key(settings.session_key)
    outcome = await send_message(gateway, chat, key, text, run_id, channel="voice")
    if outcome.run is None:
        return outcome.reply or ""
    run = await chat.runs.wait(run_id, settings.reply_timeout_s)
    if run is None or run.outcome is None:
        raise VoiceError("the assistant did not answer in time")
    if isinstance(run.outcome, RunFailed):
        raise VoiceError(f"the assistant could not answer: {run.outcome.message}")
    if isinstance(run.outcome, RunAborted):
        return ""
    return run.text


def voice_event_to_gateway(gateway: GatewayServer, kind: str, data: dict[str, Any]) -> None:
    """Publish the voice loop's events: `talk.mode` as OpenClaw has it, the rest as
    `moltis.voice.state` (`{kind, …}`) for the tray, the web app and scripts."""
    now = gateway.clock.now_ms()
    if kind == "talk.mode":
        payload = {"enabled": data.get("enabled", False), "phase": data.get("phase"), "ts": now}
        gateway.broadcast("talk.mode", payload, droppable=True)
        return
    gateway.broadcast("moltis.voice.state", {"kind": kind, **data, "ts": now}, droppable=True)
