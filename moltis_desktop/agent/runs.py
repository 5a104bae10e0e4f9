"""Runs: turns in flight, one at a time per session, that can be aborted and waited for.

The run manager is also the agent's event hub: every run's events are published to the
observers that subscribed once (the gateway's chat event bridge, the desktop tray), and a
caller can watch the events of one run (`Run.watch`). A run's outcome becomes reply text
in one place, `Run.reply()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from moltis_desktop.agent.loop import (
    AgentEvent,
    AgentLoop,
    AssistantDelta,
    RunAborted,
    RunFailed,
    RunFinished,
    TurnSpec,
)
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.providers.base import Usage

_LOGGER = logging.getLogger(__name__)

_FINISHED_KEPT = 500
"""Finished runs remembered for `agent.wait` and replays."""
ABORTED_TEXT = "the run was aborted"


@dataclass(frozen=True)
class DirectReply:
    """A message answered without the model (a command such as `/status`, a delivery to a
    session): its whole text, published like a run's final event."""

    text: str


RunEvent = AgentEvent | DirectReply
Outcome = RunFinished | RunFailed | RunAborted
_TERMINAL = (RunFinished, RunFailed, RunAborted, DirectReply)


@dataclass(frozen=True, slots=True)
class RunRef:
    """Which run an event belongs to."""

    run_id: str
    session_key: str
    agent_id: str


RunObserver = Callable[[RunRef, RunEvent], None]
"""Called with every published event, on the event loop; must not block or raise."""

Status = Literal["queued", "running", "ok", "error", "aborted"]


@dataclass(frozen=True)
class Reply:
    """What a run (or a direct answer) came to, as every ingress reports it."""

    run_id: str
    session_key: str
    agent_id: str
    status: Literal["ok", "error", "aborted", "timeout"]
    """`timeout`: the run had not finished when the caller stopped waiting."""
    text: str
    """The reply (on `error` and `aborted`: what had streamed before)."""
    error: str = ""
    """Why the run failed or stopped ("" when ok)."""
    error_kind: str = ""
    """The failure's kind (`rate_limit`, `timeout`, `context_overflow`, …)."""
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = ""
    """The model's stop reason; `command` for a direct reply."""
    model: str = ""
    started_at_ms: int = 0
    ended_at_ms: int = 0

    @property
    def duration_ms(self) -> int:
        return max(0, self.ended_at_ms - self.started_at_ms)


class RunWatch:
    """The events of one run, from the moment `Run.watch()` was called until its outcome."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        self._ended = False

    def _put(self, event: RunEvent) -> None:
        self._queue.put_nowait(event)

    async def next(self) -> RunEvent | None:
        """The next event; None once the outcome has been read."""
        if self._ended:
            return None
        event = await self._queue.get()
        if isinstance(event, _TERMINAL):
            self._ended = True
            self.close()
        return event

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RunEvent]:
        while (event := await self.next()) is not None:
            yield event

    def close(self) -> None:
        """Stop receiving events (a caller that no longer reads)."""
        with contextlib.suppress(ValueError):
            self._run._watches.remove(self)


@dataclass
class Run:
    """One turn in flight (or recently finished)."""

    spec: TurnSpec
    accepted_at_ms: int
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None
    text: str = ""
    started: bool = False
    finished_at_ms: int = 0
    _watches: list[RunWatch] = field(default_factory=list, repr=False)

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def session_key(self) -> str:
        return self.spec.session_key

    @property
    def agent_id(self) -> str:
        return self.spec.agent_id

    @functools.cached_property
    def ref(self) -> RunRef:
        return RunRef(self.run_id, self.session_key, self.agent_id)

    @property
    def status(self) -> Status:
        """`queued`, `running`, `ok`, `error` or `aborted`."""
        if self.outcome is None:
            return "running" if self.started else "queued"
        status = self.reply().status
        return "ok" if status == "timeout" else status

    def watch(self) -> RunWatch:
        """Watch this run's events from now on (a finished run gives its outcome alone).
        Call it before yielding to the event loop after starting the run to see them all;
        `agent.ask.submit` does."""
        watch = RunWatch(self)
        if self.outcome is not None and self.done.is_set():
            watch._put(self.outcome)
        else:
            self._watches.append(watch)
        return watch

    def reply(self) -> Reply:
        """The run's outcome as a reply (`timeout` while it has none)."""
        outcome = self.outcome
        reply = Reply(
            self.run_id,
            self.session_key,
            self.agent_id,
            "timeout",
            self.text,
            started_at_ms=self.accepted_at_ms,
            ended_at_ms=self.finished_at_ms,
        )
        if isinstance(outcome, RunFinished):
            return replace(
                reply,
                status="ok",
                text=outcome.text,
                usage=outcome.usage,
                stop_reason=outcome.stop_reason,
                model=outcome.model,
            )
        if isinstance(outcome, RunFailed):
            return replace(
                reply,
                status="error",
                text=outcome.text,
                error=outcome.message,
                error_kind=outcome.kind,
                usage=outcome.usage,
            )
        if isinstance(outcome, RunAborted):
            return replace(
                reply, status="aborted", text=outcome.text, error=ABORTED_TEXT, error_kind="aborted"
            )
        return reply


def direct_reply(ref: RunRef, text: str, now_ms: int) -> Reply:
    """The reply of a message answered without the model."""
    return Reply(
        ref.run_id,
        ref.session_key,
        ref.agent_id,
        "ok",
        text,
        stop_reason="command",
        started_at_ms=now_ms,
        ended_at_ms=now_ms,
    )


class RunManager:
    """Starts turns (serialised per session), aborts and awaits them, and publishes every
    run's events to its observers."""

    def __init__(self, loop: AgentLoop, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.loop = loop
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._active: dict[str, Run] = {}
        self._finished: OrderedDict[str, Run] = OrderedDict()
        self._observers: list[RunObserver] = []

    # ------------------------------------------------------------------ the hub

    def subscribe(self, observer: RunObserver) -> Callable[[], None]:
        """Call `observer` with every event of every run; returns the unsubscriber."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return unsubscribe

    def publish(self, ref: RunRef, event: RunEvent) -> None:
        """Hand an event to every observer (a failing observer is logged, never fatal)."""
        for observer in tuple(self._observers):
            try:
                observer(ref, event)
            except Exception:
                _LOGGER.exception("a run observer failed on %s", type(event).__name__)

    def _publish(self, run: Run, event: RunEvent) -> None:
        self.publish(run.ref, event)
        for watch in tuple(run._watches):
            watch._put(event)

    # ------------------------------------------------------------------ runs

    def get(self, run_id: str) -> Run | None:
        return self._active.get(run_id) or self._finished.get(run_id)

    def latest(self, session_key: str) -> Run | None:
        """The session's most recent run: one in flight, else the last that finished (of
        those still remembered)."""
        for run in reversed(self._active.values()):
            if run.session_key == session_key:
                return run
        for run in reversed(self._finished.values()):
            if run.session_key == session_key:
                return run
        return None

    def active(self, session_key: str | None = None) -> list[Run]:
        return [
            r for r in self._active.values() if session_key is None or r.session_key == session_key
        ]

    def start(self, spec: TurnSpec) -> Run:
        """Queue a turn; it starts when the session's previous turns are done."""
        run = Run(spec, self._clock.now_ms())
        self._active[spec.run_id] = run
        run.task = asyncio.get_running_loop().create_task(
            self._drive(run), name=f"run-{spec.run_id}"
        )
        return run

    async def _drive(self, run: Run) -> None:
        lock = self._locks.setdefault(run.session_key, asyncio.Lock())
        try:
            async with lock:
                run.started = True
                async for event in self.loop.run(run.spec):
                    if isinstance(event, AssistantDelta):
                        run.text = event.accumulated
                    if isinstance(event, RunFinished | RunFailed):
                        run.outcome = event
                    self._publish(run, event)
        except asyncio.CancelledError:
            run.outcome = RunAborted(run.text)
            self._publish(run, run.outcome)
        except Exception as exc:
            _LOGGER.exception("run %s failed", run.run_id)
            run.outcome = RunFailed(str(exc) or type(exc).__name__, "internal", run.text)
            self._publish(run, run.outcome)
        finally:
            if run.outcome is None:
                run.outcome = RunFailed("the run ended without an answer", "internal", run.text)
                self._publish(run, run.outcome)
            run.finished_at_ms = self._clock.now_ms()
            run._watches.clear()
            self._active.pop(run.run_id, None)
            self._finished[run.run_id] = run
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)
            if not lock.locked() and not any(
                r.session_key == run.session_key for r in self._active.values()
            ):
                self._locks.pop(run.session_key, None)
            run.done.set()

    async def abort(self, session_key: str, run_id: str | None = None) -> list[str]:
        """Stop the session's runs (or just `run_id`); returns the ids stopped."""
        targets = [r for r in self.active(session_key) if run_id is None or r.run_id == run_id]
        for run in targets:
            if run.task is not None:
                run.task.cancel()
        for run in targets:
            await run.done.wait()
        return [r.run_id for r in targets]

    async def wait(self, run_id: str, timeout_s: float | None) -> Run | None:
        """The run once finished, or as it is when `timeout_s` passes; None if unknown."""
        run = self.get(run_id)
        if run is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), timeout_s)
        return run

    async def close(self) -> None:
        """Abort everything (gateway shutdown)."""
        for run in list(self._active.values()):
            if run.task is not None:
                run.task.cancel()
        for run in list(self._active.values()):
            await run.done.wait()
