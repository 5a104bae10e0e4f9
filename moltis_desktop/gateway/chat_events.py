"""From the agent's events to OpenClaw's `chat` and `agent` event frames.

The bridge subscribes once to the run manager's hub and sees every run, whoever started
it. Deltas are coalesced: at most one `chat` delta per run every 150 ms (OpenClaw's rate),
each carrying the increment (`deltaText`) and the whole text so far (`message`); they are
droppable for slow clients, the final / aborted / error events are not. A run that failed
because nothing is set up to answer (a `setup` error) is announced by `moltis.chat.setup`
(its message and buttons) just before its `chat` error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moltis_desktop.agent.loop import (
    AssistantDelta,
    Compacted,
    ModelCallFinished,
    ModelSwitched,
    ReasoningDelta,
    RunAborted,
    RunFailed,
    RunFinished,
    RunStarted,
    ToolFinished,
    ToolStarted,
)
from moltis_desktop.agent.runs import DirectReply, RunEvent, RunRef
from moltis_desktop.agent.transcript import usage_dict
from moltis_desktop.core.clock import Clock
from moltis_desktop.gateway.broadcast import EventSink
from moltis_desktop.protocol.constants import Scope

DELTA_INTERVAL_S = 0.150
SETUP_EVENT = "moltis.chat.setup"
"""A run failed because nothing is set up to answer: its message and the actions that
would fix it (`SetupAction.to_dict`), sent just before the run's `chat` error."""
_ERROR_KINDS = {
    "rate_limit": "rate_limit",
    "timeout": "timeout",
    "context_overflow": "context_length",
}
_TERMINAL = (RunFinished, RunFailed, RunAborted, DirectReply)


def setup_notice(ref: RunRef, failed: RunFailed, ts: int) -> dict[str, Any]:
    """What `moltis.chat.setup` (and `moltis.chat.setup.get`) say of a run that failed
    because nothing is set up to answer."""
    return {
        "runId": ref.run_id,
        "sessionKey": ref.session_key,
        "agentId": ref.agent_id,
        "provider": failed.provider,
        "message": failed.message,
        "actions": [action.to_dict() for action in failed.actions],
        "ts": ts,
    }


@dataclass
class _RunState:
    ref: RunRef
    chat_seq: int = 0
    agent_seq: int = 0
    text: str = ""
    """The run's text so far."""
    pending: str = ""
    """Delta text not yet sent in a `chat` delta (they are throttled)."""
    flush_handle: asyncio.TimerHandle | None = None
    last_flush: float = 0.0


class ChatEventBridge:
    """One per gateway: the run hub's observer that turns agent events into frames."""

    def __init__(self, events: EventSink, clock: Clock) -> None:
        self._events = events
        self._clock = clock
        self._runs: dict[str, _RunState] = {}
        self._handlers: dict[type, Callable[[_RunState, Any], None]] = {
            RunStarted: self._started,
            AssistantDelta: self._delta,
            ReasoningDelta: self._reasoning,
            ToolStarted: self._tool_started,
            ToolFinished: self._tool_finished,
            ModelCallFinished: self._model_call,
            ModelSwitched: self._switched,
            Compacted: self._compacted,
            RunFinished: self._finished,
            RunFailed: self._failed,
            RunAborted: self._aborted,
            DirectReply: self._direct,
        }

    def __call__(self, ref: RunRef, event: RunEvent) -> None:
        state = self._runs.get(ref.run_id)
        if state is None:
            state = self._runs[ref.run_id] = _RunState(ref)
        try:
            self._handlers[type(event)](state, event)
        finally:
            if isinstance(event, _TERMINAL):
                if state.flush_handle is not None:
                    state.flush_handle.cancel()
                self._runs.pop(ref.run_id, None)

    # --------------------------------------------------------------- frames

    def _chat(
        self, state: _RunState, chat_state: str, *, droppable: bool = False, **fields: Any
    ) -> None:
        ref = state.ref
        payload: dict[str, Any] = {
            "runId": ref.run_id,
            "sessionKey": ref.session_key,
            "agentId": ref.agent_id,
            "seq": state.chat_seq,
            "state": chat_state,
        }
        state.chat_seq += 1
        payload.update({k: v for k, v in fields.items() if v is not None})
        self._events.broadcast("chat", payload, droppable=droppable, scope=Scope.READ)

    def _agent(
        self, state: _RunState, stream: str, data: dict[str, Any], *, droppable: bool = False
    ) -> None:
        ref = state.ref
        payload = {
            "runId": ref.run_id,
            "seq": state.agent_seq,
            "stream": stream,
            "ts": self._clock.now_ms(),
            "data": {"sessionKey": ref.session_key, "agentId": ref.agent_id, **data},
        }
        state.agent_seq += 1
        self._events.broadcast("agent", payload, droppable=droppable, scope=Scope.READ)

    def _message(self, text: str) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "timestamp": self._clock.now_ms(),
        }

    def _flush(self, state: _RunState) -> None:
        state.flush_handle = None
        if not state.pending:
            return
        self._chat(
            state,
            "delta",
            droppable=True,
            deltaText=state.pending,
            message=self._message(state.text),  # the run's text so far
        )
        state.pending = ""
        state.last_flush = asyncio.get_running_loop().time()

    # --------------------------------------------------------------- events

    def _started(self, state: _RunState, event: RunStarted) -> None:
        self._agent(state, "lifecycle", {"phase": "start", "model": event.model})

    def _delta(self, state: _RunState, event: AssistantDelta) -> None:
        state.pending += event.text
        state.text = event.accumulated
        self._agent(state, "assistant", {"delta": event.text}, droppable=True)
        loop = asyncio.get_running_loop()
        wait = DELTA_INTERVAL_S - (loop.time() - state.last_flush)
        if wait <= 0:
            self._flush(state)
        elif state.flush_handle is None:
            state.flush_handle = loop.call_later(wait, self._flush, state)

    def _reasoning(self, state: _RunState, event: ReasoningDelta) -> None:
        self._agent(state, "thinking", {"delta": event.text}, droppable=True)

    def _tool_started(self, state: _RunState, event: ToolStarted) -> None:
        call = event.call
        self._agent(
            state,
            "tool",
            {
                "phase": "start",
                "name": call.name,
                "toolCallId": call.id,
                "args": dict(call.arguments),
            },
        )

    def _tool_finished(self, state: _RunState, event: ToolFinished) -> None:
        result = event.result
        self._agent(
            state,
            "tool",
            {
                "phase": "result",
                "name": result.name,
                "toolCallId": result.call_id,
                "isError": result.is_error,
                "result": result.content[:2000],
                "durationMs": event.duration_ms,
            },
        )

    def _model_call(self, state: _RunState, event: ModelCallFinished) -> None:
        self._agent(
            state,
            "lifecycle",
            {
                "phase": "model",
                "model": event.model,
                "usage": usage_dict(event.usage),
                "stopReason": event.stop_reason,
            },
        )

    def _switched(self, state: _RunState, event: ModelSwitched) -> None:
        self._agent(
            state, "lifecycle", {"phase": "fallback", "model": event.model, "reason": event.reason}
        )

    def _compacted(self, state: _RunState, event: Compacted) -> None:
        self._agent(state, "compaction", {"phase": "end", "tokensBefore": event.tokens_before})

    def _finished(self, state: _RunState, event: RunFinished) -> None:
        self._flush(state)
        usage = usage_dict(event.usage)
        self._chat(
            state,
            "final",
            message=self._message(event.text),
            usage=usage,
            stopReason=event.stop_reason,
        )
        self._agent(
            state, "lifecycle", {"phase": "end", "usage": usage, "stopReason": event.stop_reason}
        )

    def _failed(self, state: _RunState, event: RunFailed) -> None:
        self._flush(state)
        if event.kind == "setup":
            # Nothing is set up to answer. OpenClaw's chat event allows no extra fields, so
            # the buttons go in an event of ours, sent first: a client that knows it shows
            # one notice with them when the `error` follows; others show the message.
            self._events.broadcast(
                SETUP_EVENT, setup_notice(state.ref, event, self._clock.now_ms()), scope=Scope.READ
            )
        detail = {"provider": event.provider[:300], "providerErrorType": event.kind[:300]}
        self._chat(
            state,
            "error",
            errorMessage=event.message,
            errorKind=_ERROR_KINDS.get(event.kind, "unknown"),
            errorDetail=detail if event.provider else None,
            message=self._message(event.text) if event.text else None,
        )
        self._agent(
            state, "lifecycle", {"phase": "error", "error": event.message, "kind": event.kind}
        )

    def _aborted(self, state: _RunState, event: RunAborted) -> None:
        self._flush(state)
        self._chat(
            state,
            "aborted",
            stopReason="aborted",
            message=self._message(event.text) if event.text else None,
        )
        self._agent(state, "lifecycle", {"phase": "aborted"})

    def _direct(self, state: _RunState, event: DirectReply) -> None:
        """A message answered without the model (a command, a delivery): one `final`."""
        self._chat(state, "final", message=self._message(event.text), stopReason="command")
