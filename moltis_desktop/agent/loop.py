"""The tool-calling loop: model call, tools (in parallel), model call, … until the model
answers, with fallbacks, compaction, an iteration cap, and transcripts written as it goes.

The loop knows nothing of the wire protocol: it yields its own typed events, which the
gateway maps to OpenClaw's `chat` and `agent` events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from moltis_desktop.agent.tools import ToolContext, ToolRegistry
from moltis_desktop.agent.transcript import (
    assistant_text_entry,
    to_entries,
    to_messages,
    usage_dict,
)
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.keys import ServiceMap
from moltis_desktop.providers.base import (
    Completed,
    CompletionRequest,
    ImagePart,
    Message,
    ModelInfo,
    Provider,
    ProviderError,
    SetupAction,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingLevel,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

_LOGGER = logging.getLogger(__name__)


class ModelResolver(Protocol):
    """Finds the provider and model for a `provider/model` reference."""

    def resolve(self, ref: str, *, auth_profile: str = "") -> tuple[Provider, ModelInfo]: ...


class TranscriptStore(Protocol):
    """The part of the session store the loop uses."""

    def history(self, key: str) -> list[dict[str, Any]]: ...

    def append(self, key: str, entry: Mapping[str, Any]) -> str: ...

    def append_many(self, key: str, entries: Sequence[Mapping[str, Any]]) -> list[str]: ...

    def add_usage(
        self, key: str, model: str, provider: str, usage: Mapping[str, Any]
    ) -> object: ...

    def record_compaction(
        self, key: str, summary: str, first_kept_entry_id: str | None, tokens_before: int
    ) -> object: ...


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    model: str


@dataclass(frozen=True)
class AssistantDelta:
    """More reply text: `text` is the increment, `accumulated` the run's text so far."""

    text: str
    accumulated: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolStarted:
    call: ToolCall


@dataclass(frozen=True)
class ToolFinished:
    result: ToolResult
    duration_ms: int


@dataclass(frozen=True)
class ModelCallFinished:
    model: str
    usage: Usage
    stop_reason: str


@dataclass(frozen=True)
class Compacted:
    tokens_before: int


@dataclass(frozen=True)
class RunFinished:
    text: str
    usage: Usage
    stop_reason: str
    model: str


@dataclass(frozen=True)
class ModelSwitched:
    """A retryable failure made the loop fall back to the next model."""

    model: str
    reason: str


@dataclass(frozen=True)
class RunAborted:
    """The run was stopped (`chat.abort`, `/stop`); `text` is what had streamed."""

    text: str


@dataclass(frozen=True)
class RunFailed:
    message: str
    kind: str
    """A provider's `ErrorKind` (`setup`, `auth`, …) or the agent's own (`iteration_limit`,
    `internal`)."""
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    """The provider whose call failed ("" when the failure was not a provider's)."""
    actions: tuple[SetupAction, ...] = ()
    """A `setup` failure's ways out (download a model, add a key, start a server)."""


AgentEvent = (
    RunStarted
    | AssistantDelta
    | ReasoningDelta
    | ToolStarted
    | ToolFinished
    | ModelCallFinished
    | ModelSwitched
    | Compacted
    | RunFinished
    | RunFailed
    | RunAborted
)


@dataclass(frozen=True)
class _Switch:
    provider: Provider
    info: ModelInfo
    reason: str


@dataclass(frozen=True)
class TurnSpec:
    """One turn: a user message and how to answer it."""

    run_id: str
    agent_id: str
    session_key: str
    message: str
    model: str
    """`provider/model` to use first."""
    fallbacks: tuple[str, ...] = ()
    images: tuple[ImagePart, ...] = ()
    system_prompt: str = ""
    thinking: ThinkingLevel = "off"
    max_iterations: int = 25
    max_tokens: int = 8192
    tool_timeout_s: float = 60.0
    tool_result_max_chars: int = 32_000
    tools_allow: tuple[str, ...] = ("*",)
    tools_deny: tuple[str, ...] = ()
    reserve_tokens: int = 16_384
    keep_recent_tokens: int = 20_000
    tool_services: ServiceMap = field(default_factory=ServiceMap)
    """What the turn's tools may use, by typed key."""
    auth_profile: str = ""
    """The agent's auth profile (credentials used for its model calls)."""


_EXPLICIT_TOOL = re.compile(r"(?:^|(?<=\s))/(?P<name>[A-Za-z][\w.-]*)")


def lean_tools(
    provider: Provider, tools: tuple[ToolSpec, ...], message: str
) -> tuple[ToolSpec, ...]:
    """The tools offered to `provider`: all of them, except in lean mode (a provider with a
    `tool_allowlist`, the embedded local model), where only the allowlisted ones and those
    the message names as `/tool_name` are (small models call tools when none is needed)."""
    allow = provider.capabilities.tool_allowlist
    if allow is None:
        return tools
    asked = {m.group("name") for m in _EXPLICIT_TOOL.finditer(message)}
    return tuple(t for t in tools if t.name in allow or t.name in asked)


class AgentError(MoltisError):
    """A turn could not run (no model, …); the message says what to do."""


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token), for compaction decisions."""
    return _tokens_for_chars(len(text))


def _tokens_for_chars(chars: int) -> int:
    return chars // 4 + 1


def _message_chars(message: Message) -> int:
    total = 0
    for part in message.parts:
        if isinstance(part, TextPart):
            total += len(part.text)
        elif isinstance(part, ToolResult):
            total += len(part.content)
        elif isinstance(part, ToolCall):
            total += len(str(part.arguments)) + len(part.name)
        elif isinstance(part, ImagePart):
            total += 4000
        else:
            total += len(getattr(part, "text", ""))
    return total


@dataclass
class _TurnState:
    provider: Provider
    info: ModelInfo
    text: str = ""
    total: Usage = field(default_factory=Usage)
    last_context: int = 0


class AgentLoop:
    """Runs turns; one instance serves every agent and session."""

    def __init__(self, models: ModelResolver, store: TranscriptStore, tools: ToolRegistry) -> None:
        self.models = models
        self.store = store
        self.tools = tools

    @staticmethod
    async def _io(fn: Any, *args: Any, **kwargs: Any) -> Any:
        # Transcript reads and fsynced writes run in a thread: on the event loop they would
        # stall every other client's stream.
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def run(self, spec: TurnSpec) -> AsyncIterator[AgentEvent]:
        """Run one turn, yielding events; cancellation stops the model and the tools."""
        provider, info = self.models.resolve(spec.model, auth_profile=spec.auth_profile)
        state = _TurnState(provider, info)
        yield RunStarted(spec.run_id, info.ref)
        await self._io(
            self.store.append_many,
            spec.session_key,
            to_entries(Message("user", (TextPart(spec.message), *spec.images))),
        )
        tools = lean_tools(
            provider,
            tuple(self.tools.specs(spec.tools_allow, spec.tools_deny, spec.tool_services)),
            spec.message,
        )
        try:
            for _ in range(spec.max_iterations):
                entries = await self._io(self.store.history, spec.session_key)
                compacted = await self._maybe_compact(
                    spec, state.provider, state.info, state.last_context, entries=entries
                )
                if compacted is not None:
                    yield compacted
                    entries = await self._io(self.store.history, spec.session_key)
                completed: Completed | None = None
                async for event in self._model_call(spec, state, tools, entries):
                    if isinstance(event, Completed):
                        completed = event
                    else:
                        yield event
                assert completed is not None
                calls = completed.message.tool_calls
                if not calls:
                    yield RunFinished(
                        state.text, state.total, completed.stop_reason, state.info.ref
                    )
                    return
                async for event in self._run_tools(spec, calls):
                    yield event
            yield RunFailed(
                f"the agent stopped after {spec.max_iterations} model calls "
                "without a final answer (agents.max_iterations)",
                "iteration_limit",
                state.text,
                state.total,
            )
        except asyncio.CancelledError:
            if state.text:
                entry = assistant_text_entry(
                    state.text,
                    stopReason="aborted",
                    model=state.info.id,
                    provider=state.provider.id,
                )
                self.store.append(spec.session_key, entry)
            raise
        except ProviderError as exc:
            yield RunFailed(
                exc.message,
                exc.kind,
                state.text,
                state.total,
                provider=exc.provider,
                actions=exc.actions,
            )

    async def _model_call(
        self,
        spec: TurnSpec,
        state: _TurnState,
        tools: tuple[ToolSpec, ...],
        entries: list[dict[str, Any]],
    ) -> AsyncIterator[Any]:
        """One model call: its deltas as agent events, then its `Completed` (recorded)."""
        request = CompletionRequest(
            model=state.info.id,
            messages=tuple(to_messages(entries)),
            system=spec.system_prompt,
            tools=tools,
            max_tokens=spec.max_tokens,
            thinking=spec.thinking,
        )
        separator_due = bool(state.text)
        completed: Completed | None = None
        async for event in self._stream_with_fallback(spec, request):
            if isinstance(event, TextDelta):
                if separator_due:  # text after a tool round starts a new paragraph
                    state.text += "\n\n"
                    separator_due = False
                state.text += event.text
                yield AssistantDelta(event.text, state.text)
            elif isinstance(event, ThinkingDelta):
                yield ReasoningDelta(event.text)
            elif isinstance(event, Completed):
                completed = event
            elif isinstance(event, _Switch):
                state.provider, state.info = event.provider, event.info
                yield ModelSwitched(event.info.ref, event.reason)
        assert completed is not None
        usage = completed.usage
        state.total = state.total + usage
        state.last_context = usage.total_tokens
        await self._record_assistant(spec, completed, state.info)
        yield ModelCallFinished(state.info.ref, usage, completed.stop_reason)
        yield completed

    async def _record_assistant(
        self, spec: TurnSpec, completed: Completed, info: ModelInfo
    ) -> None:
        meta = {
            "model": info.id,
            "provider": info.provider,
            "usage": usage_dict(completed.usage),
            "stopReason": completed.stop_reason,
        }
        await self._io(
            self.store.append_many, spec.session_key, to_entries(completed.message, **meta)
        )
        await self._io(
            self.store.add_usage,
            spec.session_key,
            model=info.id,
            provider=info.provider,
            usage=usage_dict(completed.usage),
        )

    async def _stream_with_fallback(
        self, spec: TurnSpec, request: CompletionRequest
    ) -> AsyncIterator[Any]:
        refs = (spec.model, *spec.fallbacks)
        last_error: ProviderError | None = None
        for index, ref in enumerate(refs):
            provider, info = self.models.resolve(ref, auth_profile=spec.auth_profile)
            if index:
                _LOGGER.warning("falling back to %s after: %s", ref, last_error)
                yield _Switch(provider, info, str(last_error))
            started = False
            try:
                async for event in provider.stream(replace(request, model=info.id)):
                    started = True
                    yield event
                return
            except ProviderError as exc:
                # Once output has reached the user, switching models would garble the reply.
                if started or not exc.retryable or index == len(refs) - 1:
                    raise
                last_error = exc

    async def _run_tools(
        self, spec: TurnSpec, calls: Sequence[ToolCall]
    ) -> AsyncIterator[AgentEvent]:
        ctx = ToolContext(spec.agent_id, spec.session_key, spec.run_id, spec.tool_services)
        for call in calls:
            yield ToolStarted(call)

        async def one(call: ToolCall) -> tuple[ToolResult, int]:
            started = time.monotonic()
            result = await self.tools.run(
                call,
                ctx,
                timeout_s=spec.tool_timeout_s,
                max_chars=spec.tool_result_max_chars,
                allow=spec.tools_allow,
                deny=spec.tools_deny,
            )
            return result, int((time.monotonic() - started) * 1000)

        # The model asked for these together: run them together.
        outcomes = await asyncio.gather(*(one(c) for c in calls))
        for result, duration in outcomes:
            yield ToolFinished(result, duration)
        # One write for the whole round: a crash never leaves some results without others.
        await self._io(
            self.store.append_many,
            spec.session_key,
            to_entries(Message("user", tuple(r for r, _ in outcomes))),
        )

    async def compact(self, spec: TurnSpec, *, force: bool = False) -> Compacted | None:
        """Summarise the session's older turns (now if `force`, else only when the context
        nears the model's window)."""
        provider, info = self.models.resolve(spec.model, auth_profile=spec.auth_profile)
        return await self._maybe_compact(spec, provider, info, 0, force=force)

    async def _maybe_compact(
        self,
        spec: TurnSpec,
        provider: Provider,
        info: ModelInfo,
        last_context: int,
        *,
        force: bool = False,
        entries: list[dict[str, Any]] | None = None,
    ) -> Compacted | None:
        window = info.context_window or provider.capabilities.default_context_window
        if entries is None:
            entries = await self._io(self.store.history, spec.session_key)
        messages = to_messages(entries)
        estimate = estimate_tokens(spec.system_prompt) + sum(
            _tokens_for_chars(_message_chars(m)) for m in messages
        )
        context = max(estimate, last_context)
        if not force and context <= window - spec.reserve_tokens:
            return None
        keep_from = self._keep_boundary(entries, 0 if force else spec.keep_recent_tokens)
        if keep_from is None:
            return None
        older = to_messages(entries[:keep_from])
        if not older:
            return None
        summary = await self._summarise(provider, info, older, spec)
        first_kept = str(entries[keep_from].get("id"))
        await self._io(
            self.store.record_compaction,
            spec.session_key,
            summary=summary,
            first_kept_entry_id=first_kept,
            tokens_before=context,
        )
        _LOGGER.info("compacted %s: %d tokens before", spec.session_key, context)
        return Compacted(context)

    @staticmethod
    def _keep_boundary(entries: Sequence[Mapping[str, Any]], keep_tokens: int) -> int | None:
        """Index of the first entry kept verbatim: a user message (never a tool result, so a
        tool call and its result stay together), as recent as `keep_tokens` allows."""
        budget = keep_tokens
        best: int | None = None
        for index in range(len(entries) - 1, 0, -1):
            body = entries[index].get("message") or {}
            budget -= estimate_tokens(str(body.get("content", "")))
            if body.get("role") == "user" and entries[index].get("type") == "message":
                if budget < 0 and best is not None:
                    break
                best = index
        return best

    async def _summarise(
        self, provider: Provider, info: ModelInfo, older: Sequence[Message], spec: TurnSpec
    ) -> str:
        lines = []
        for message in older:
            for part in message.parts:
                if isinstance(part, TextPart) and part.text.strip():
                    lines.append(f"{message.role}: {part.text.strip()}")
                elif isinstance(part, ToolCall):
                    lines.append(f"assistant called {part.name}({dict(part.arguments)})")
                elif isinstance(part, ToolResult):
                    lines.append(f"tool {part.name} returned: {part.content[:500]}")
        request = CompletionRequest(
            info.id,
            (Message("user", (TextPart("\n".join(lines)),)),),
            system="Summarise this conversation for your own later reference: the user's "
            "goals, facts learned, decisions, open tasks, names and numbers that "
            "matter. Be concise; write the summary only.",
            max_tokens=min(spec.max_tokens, 2048),
        )
        summary = ""
        async for event in provider.stream(request):
            if isinstance(event, Completed):
                summary = event.message.text
                await self._io(
                    self.store.add_usage,
                    spec.session_key,
                    model=info.id,
                    provider=info.provider,
                    usage=usage_dict(event.usage),
                )
        return summary.strip() or "(earlier conversation omitted)"
