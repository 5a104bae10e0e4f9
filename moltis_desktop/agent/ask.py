"""The one way to hand the agent a message: `submit` starts the turn (and watches it from
its first event), `ask` waits for the reply. Every ingress uses it: the WebSocket chat
methods, the OpenAI-compatible endpoint, voice, the session tools, and (later) channels
and cron. It canonicalises the session key, once, for everything below it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Unpack

from moltis_desktop.agent.runs import Reply, Run, RunRef, RunWatch, direct_reply
from moltis_desktop.agent.service import ChatService, SendOptions


@dataclass
class Turn:
    """A message handed to the agent: the run it started, or an answer given without the
    model (a command's, or nothing at all for an empty message)."""

    session_key: str
    agent_id: str
    run_id: str
    run: Run | None
    answer: str | None
    """A command's or directive's answer (alongside a run, or instead of one)."""
    events: RunWatch | None
    """The run's events from its first (None without a run)."""
    accepted_at_ms: int

    @property
    def ref(self) -> RunRef:
        return RunRef(self.run_id, self.session_key, self.agent_id)

    async def reply(self, timeout_s: float | None = None) -> Reply:
        """The reply once the run finished (status `timeout` if it has not within
        `timeout_s`; the run goes on). Without a run: the command's answer."""
        if self.run is None:
            return direct_reply(self.ref, self.answer or "", self.accepted_at_ms)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.run.done.wait()
        return self.run.reply()

    def close(self) -> None:
        """Stop watching the run's events (the run goes on)."""
        if self.events is not None:
            self.events.close()


async def submit(
    chat: ChatService,
    message: str,
    *,
    session_key: str | None = None,
    agent_id: str | None = None,
    **options: Unpack[SendOptions],
) -> Turn:
    """Hand `message` to the agent of `session_key` (empty: the agent's main session; a
    short form such as `main` is canonicalised here), with `ChatService.send`'s options.
    Raises `MoltisError` saying what is wrong (an unknown agent or model, a bad
    attachment, a malformed key)."""
    outcome = await chat.send(chat.session_key(session_key, agent_id), message, **options)
    # Watched before anything else runs on the loop: the run's task has not started yet,
    # so no event is missed.
    events = outcome.run.watch() if outcome.run is not None else None
    return Turn(
        outcome.session_key,
        outcome.agent_id,
        outcome.run_id,
        outcome.run,
        outcome.reply,
        events,
        outcome.run.accepted_at_ms if outcome.run is not None else chat.clock.now_ms(),
    )


async def ask(
    chat: ChatService,
    message: str,
    *,
    session_key: str | None = None,
    agent_id: str | None = None,
    timeout_s: float | None = None,
    **options: Unpack[SendOptions],
) -> Reply:
    """Send `message` to a session and wait for the reply (status `timeout` when it takes
    longer than `timeout_s`; the run goes on, `chat.runs.abort` stops it)."""
    turn = await submit(chat, message, session_key=session_key, agent_id=agent_id, **options)
    turn.close()  # only the reply is wanted
    return await turn.reply(timeout_s)
