"""From the agent's events to OpenClaw's `chat` and `agent` event frames.

Deltas are coalesced: at most one `chat` delta per run every 150 ms (OpenClaw's rate), each
carrying the increment (`deltaText`) and the whole text so far (`message`); they are
droppable for slow clients, the final / aborted / error events are not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moltis_desktop.agent.loop import (
    AgentEvent,
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
from moltis_desktop.agent.runs import Run
from moltis_desktop.agent.transcript import usage_dict
from moltis_desktop.protocol.constants import Scope

if TYPE_CHECKING:
    from moltis_desktop.gateway.server import GatewayServer


DELTA_INTERVAL_S = 0.150
_ERROR_KINDS = {
    "rate_limit": "rate_limit",
    "timeout": "timeout",
    "context_overflow": "context_length",
}


@dataclass
class _RunState:
    chat_seq: int = 0
    agent_seq: int = 0
    pending: str = ""
    """Delta text not yet sent in a `chat` delta (they are throttled)."""
    flush_handle: asyncio.TimerHandle | None = None
    last_flush: float = 0.0


class ChatEventBridge:
    """One per gateway: the sink the run manager calls for every agent event."""

    def __init__(self, gateway: GatewayServer) -> None:
        self.gateway = gateway
        self._runs: dict[str, _RunState] = {}

    def command_reply(self, run_id: str, session_key: str, agent_id: str, text: str) -> None:
        """A message answered by the gateway itself (a command, a delivery): one `final`."""
        self.gateway.broadcast(
            "chat",
            {
                "runId": run_id,
                "sessionKey": session_key,
                "agentId": agent_id,
                "seq": 0,
                "state": "final",
                "message": self._message(text),
                "stopReason": "command",
            },
            scope=Scope.READ,
        )

    def __call__(self, run: Run, event: AgentEvent) -> None:
        state = self._runs.setdefault(run.run_id, _RunState())
        try:
            self._handle(run, state, event)
        finally:
            if isinstance(event, RunFinished | RunFailed | RunAborted):
                if state.flush_handle is not None:
                    state.flush_handle.cancel()
                self._runs.pop(run.run_id, None)

    # --------------------------------------------------------------- frames

    def _chat(
        self, run: Run, state: _RunState, chat_state: str, *, droppable: bool = False, **fields: Any
    ) -> None:
        payload: dict[str, Any] = {
            "runId": run.run_id,
            "sessionKey": run.session_key,
            "agentId": run.spec.agent_id,
            "seq": state.chat_seq,
            "state": chat_state,
        }
        state.chat_seq += 1
        payload.update({k: v for k, v in fields.items() if v is not None})
        self.gateway.broadcast("chat", payload, droppable=droppable, scope=Scope.READ)

    def _agent(
        self,
        run: Run,
        state: _RunState,
        stream: str,
        data: dict[str, Any],
        *,
        droppable: bool = False,
    ) -> None:
        payload = {
            "runId": run.run_id,
            "seq": state.agent_seq,
            "stream": stream,
            "ts": self.gateway.clock.now_ms(),
            "data": {"sessionKey": run.session_key, "agentId": run.spec.agent_id, **data},
        }
        state.agent_seq += 1
        self.gateway.broadcast("agent", payload, droppable=droppable, scope=Scope.READ)

    def _message(self, text: str) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "timestamp": self.gateway.clock.now_ms(),
        }

    def _flush(self, run: Run, state: _RunState) -> None:
        state.flush_handle = None
        if not state.pending:
            return
        self._chat(
            run,
            state,
            "delta",
            droppable=True,
            deltaText=state.pending,
            message=self._message(run.text),  # the run's text so far
        )
        state.pending = ""
        state.last_flush = asyncio.get_running_loop().time()

    # --------------------------------------------------------------- events

    def _handle(self, run: Run, state: _RunState, event: AgentEvent) -> None:
        if isinstance(event, RunStarted):
            self._agent(run, state, "lifecycle", {"phase": "start", "model": event.model})
        elif isinstance(event, AssistantDelta):
            state.pending += event.text
            self._agent(run, state, "assistant", {"delta": event.text}, droppable=True)
            loop = asyncio.get_running_loop()
            wait = DELTA_INTERVAL_S - (loop.time() - state.last_flush)
            if wait <= 0:
                self._flush(run, state)
            elif state.flush_handle is None:
                state.flush_handle = loop.call_later(wait, self._flush, run, state)
        elif isinstance(event, ReasoningDelta):
            self._agent(run, state, "thinking", {"delta": event.text}, droppable=True)
        elif isinstance(event, ToolStarted):
            self._agent(
                run,
                state,
                "tool",
                {
                    "phase": "start",
                    "name": event.call.name,
                    "toolCallId": event.call.id,
                    "args": dict(event.call.arguments),
                },
            )
        elif isinstance(event, ToolFinished):
            result = event.result
            self._agent(
                run,
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
        elif isinstance(event, ModelCallFinished):
            self._agent(
                run,
                state,
                "lifecycle",
                {
                    "phase": "model",
                    "model": event.model,
                    "usage": usage_dict(event.usage),
                    "stopReason": event.stop_reason,
                },
            )
        elif isinstance(event, ModelSwitched):
            self._agent(
                run,
                state,
                "lifecycle",
                {"phase": "fallback", "model": event.model, "reason": event.reason},
            )
        elif isinstance(event, Compacted):
            self._agent(
                run, state, "compaction", {"phase": "end", "tokensBefore": event.tokens_before}
            )
        elif isinstance(event, RunFinished):
            self._flush(run, state)
            usage = usage_dict(event.usage)
            self._chat(
                run,
                state,
                "final",
                message=self._message(event.text),
                usage=usage,
                stopReason=event.stop_reason,
            )
            self._agent(
                run,
                state,
                "lifecycle",
                {"phase": "end", "usage": usage, "stopReason": event.stop_reason},
            )
        elif isinstance(event, RunFailed):
            self._flush(run, state)
            self._chat(
                run,
                state,
                "error",
                errorMessage=event.message,
                errorKind=_ERROR_KINDS.get(event.kind, "unknown"),
                message=self._message(event.text) if event.text else None,
            )
            self._agent(
                run,
                state,
                "lifecycle",
                {"phase": "error", "error": event.message, "kind": event.kind},
            )
        elif isinstance(event, RunAborted):
            self._flush(run, state)
            self._chat(
                run,
                state,
                "aborted",
                stopReason="aborted",
                message=self._message(event.text) if event.text else None,
            )
            self._agent(run, state, "lifecycle", {"phase": "aborted"})
