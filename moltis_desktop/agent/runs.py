"""Runs: turns in flight, one at a time per session, that can be aborted and waited for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

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

_LOGGER = logging.getLogger(__name__)

_FINISHED_KEPT = 500
"""Finished runs remembered for `agent.wait` and replays."""

EventSink = Callable[["Run", AgentEvent], None]


@dataclass
class Run:
    """One turn in flight (or recently finished)."""

    spec: TurnSpec
    accepted_at_ms: int
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: RunFinished | RunFailed | RunAborted | None = None
    text: str = ""
    started: bool = False
    finished_at_ms: int = 0

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def session_key(self) -> str:
        return self.spec.session_key

    @property
    def status(self) -> str:
        """`queued`, `running`, `ok`, `error` or `aborted`."""
        if isinstance(self.outcome, RunFinished):
            return "ok"
        if isinstance(self.outcome, RunFailed):
            return "error"
        if isinstance(self.outcome, RunAborted):
            return "aborted"
        return "running" if self.started else "queued"


class RunManager:
    """Starts turns (serialised per session), aborts and awaits them."""

    def __init__(self, loop: AgentLoop, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.loop = loop
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._active: dict[str, Run] = {}
        self._finished: OrderedDict[str, Run] = OrderedDict()

    def get(self, run_id: str) -> Run | None:
        return self._active.get(run_id) or self._finished.get(run_id)

    def active(self, session_key: str | None = None) -> list[Run]:
        return [
            r for r in self._active.values() if session_key is None or r.session_key == session_key
        ]

    def start(self, spec: TurnSpec, sink: EventSink) -> Run:
        """Queue a turn; it starts when the session's previous turns are done."""
        run = Run(spec, self._clock.now_ms())
        self._active[spec.run_id] = run
        run.task = asyncio.get_running_loop().create_task(
            self._drive(run, sink), name=f"run-{spec.run_id}"
        )
        return run

    async def _drive(self, run: Run, sink: EventSink) -> None:
        lock = self._locks.setdefault(run.session_key, asyncio.Lock())
        try:
            async with lock:
                run.started = True
                async for event in self.loop.run(run.spec):
                    if isinstance(event, AssistantDelta):
                        run.text = event.accumulated
                    if isinstance(event, RunFinished | RunFailed):
                        run.outcome = event
                    sink(run, event)
        except asyncio.CancelledError:
            run.outcome = RunAborted(run.text)
            sink(run, run.outcome)
        except Exception as exc:
            _LOGGER.exception("run %s failed", run.run_id)
            run.outcome = RunFailed(str(exc) or type(exc).__name__, "internal", run.text)
            sink(run, run.outcome)
        finally:
            if run.outcome is None:
                run.outcome = RunFailed("the run ended without an answer", "internal", run.text)
            run.finished_at_ms = self._clock.now_ms()
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
