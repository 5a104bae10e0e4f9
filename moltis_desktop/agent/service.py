"""The chat service: turns a message for a session into a run (or a command's answer).

It picks the agent, the model (session override > agent > defaults), the thinking level,
builds the system prompt, applies directives and commands, and hands the turn to the run
manager, which publishes its events. Every ingress (the WebSocket chat, the OpenAI HTTP
endpoint, voice, the session tools) reaches it through `agent.ask`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict

from moltis_desktop.agent.directives import HELP_TEXT, ParsedMessage, exec_options, parse
from moltis_desktop.agent.loop import AgentError, AgentLoop, Compacted, RunFailed, TurnSpec
from moltis_desktop.agent.prompt import PromptContext, build_system_prompt
from moltis_desktop.agent.runs import DirectReply, Run, RunManager, RunRef
from moltis_desktop.agent.tools import ToolRegistry
from moltis_desktop.agent.transcript import assistant_text_entry
from moltis_desktop.config.settings import AgentSettings, PriceSettings, Settings
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.keys import ServiceKey, ServiceMap
from moltis_desktop.media.attachments import Attachment, Transcribe, prepare
from moltis_desktop.providers.base import (
    THINKING_LEVELS,
    ImagePart,
    ModelInfo,
    Provider,
    ThinkingLevel,
    Usage,
)
from moltis_desktop.providers.pricing import cost
from moltis_desktop.sessions.keys import main_session_key
from moltis_desktop.sessions.store import SESSIONS, SessionStore
from moltis_desktop.sessions.usage import UsageTotals

_LOGGER = logging.getLogger(__name__)


class ModelSource(Protocol):
    """What the service needs of the models in effect (`providers.models.Models`)."""

    def resolve(self, ref: str, *, auth_profile: str = "") -> tuple[Provider, ModelInfo]: ...

    def default_model(self) -> str: ...

    async def ensure_credentials(self, auth_profile: str) -> None: ...

    def rediscover(self) -> bool: ...


class SendOptions(TypedDict, total=False):
    """How `ChatService.send` (and `agent.ask`) handles a message, beyond its text."""

    run_id: str | None
    """The run's id (a client's idempotency key); a fresh one when absent."""
    thinking: str | None
    model: str | None
    """`provider/model` for this turn only."""
    attachments: Sequence[Attachment]
    channel: str
    """What the conversation happens over (for the system prompt)."""
    extra_system_prompt: str
    interpret_commands: bool
    """Directives and commands (`/reset`, `/think`) are read (default) or sent as text."""


@dataclass(frozen=True)
class SendOutcome:
    """What `send` did: a run started, and/or an answer from a command or directive."""

    session_key: str
    agent_id: str
    run_id: str
    run: Run | None = None
    reply: str | None = None


def totals_cost(model: str, totals: UsageTotals, prices: Mapping[str, PriceSettings]) -> float:
    """What `totals` (of the usage ledger) of `model` cost, in US dollars."""
    usage = Usage(totals.input, totals.output, totals.cache_read, totals.cache_write)
    return cost(model, usage, prices)


def compaction_text(compacted: Compacted | None) -> str:
    """What `/compact` and `sessions.compact` tell the user."""
    if compacted is None:
        return "Nothing to compact yet."
    return f"Compacted the conversation ({compacted.tokens_before} tokens before)."


class ChatService:
    """Sessions, agents and models, put together for one message at a time."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        sessions: SessionStore,
        models: ModelSource,
        tools: ToolRegistry,
        state_dir: Path,
        config_dir: Path,
        tool_services: ServiceMap | None = None,
        transcribe: Transcribe | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._settings = settings
        self.sessions = sessions
        self.models = models
        self.state_dir = state_dir
        self.config_dir = config_dir
        self.clock = clock
        self.tools = tools
        self.tool_services = tool_services if tool_services is not None else ServiceMap()
        """What tools may use, by typed key; the service adds itself and the session store,
        the host adds the rest (the desktop app's canvas)."""
        self.tool_services[CHAT] = self
        self.tool_services[SESSIONS] = sessions
        self.transcribe = transcribe
        """Turns a voice note into text (None without voice)."""
        self.runs = RunManager(AgentLoop(models, sessions, tools), clock=clock)
        self._rediscover = False
        """A turn found nothing set up to answer: the next one looks again for providers
        (the user may have stored a key or started Ollama since, and says "try again")."""
        self.runs.subscribe(self._watch_setup)

    def _watch_setup(self, ref: RunRef, event: object) -> None:
        if isinstance(event, RunFailed) and event.kind == "setup":
            self._rediscover = True

    # ------------------------------------------------------------------ lookups

    @property
    def settings(self) -> Settings:
        return self._settings()

    def agent(self, agent_id: str | None = None) -> AgentSettings:
        """An agent's settings (the default agent when `agent_id` is None)."""
        agents = self.settings.agents
        wanted = (agent_id or agents.default).lower()
        for agent in agents.list:
            if agent.id.lower() == wanted:
                return agent
        known = ", ".join(a.id for a in agents.list)
        raise AgentError(f"unknown agent {agent_id!r}; configured agents: {known}")

    def session_key(self, key: str | None, agent_id: str | None = None) -> str:
        """The canonical key (`main` → `agent:<default>:main`, empty → the agent's main)."""
        agent = self.agent(agent_id)
        if not key:
            return main_session_key(agent.id, self.settings.session.main_key)
        return str(self.sessions.parse(key))

    def agent_of(self, session_key: str) -> AgentSettings:
        return self.agent(self.sessions.parse(session_key).agent_id)

    def workspace(self, agent: AgentSettings) -> Path:
        if agent.workspace:
            return Path(agent.workspace).expanduser()
        return self.state_dir / "workspace" / agent.id

    def model_for(self, agent: AgentSettings, override: str | None = None) -> str:
        """`provider/model`: a session override, else the agent's, else the default."""
        ref = override or agent.model or self.settings.agents.model
        if not ref:
            ref = self.models.default_model()
        if not ref:
            raise AgentError(
                "no model is configured: set agents.model, or a provider "
                "(ANTHROPIC_API_KEY, OPENAI_API_KEY, or [providers.<id>])"
            )
        return ref

    def check_model(self, ref: str, agent: AgentSettings) -> str:
        """`ref` resolved to `provider/model` (raises with what to do when unknown)."""
        _provider, info = self.models.resolve(ref, auth_profile=agent.auth_profile)
        return info.ref

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        key: str,
        message: str,
        *,
        run_id: str | None = None,
        thinking: str | None = None,
        model: str | None = None,
        attachments: Sequence[Attachment] = (),
        channel: str = "",
        extra_system_prompt: str = "",
        interpret_commands: bool = True,
    ) -> SendOutcome:
        """Handle one message for the session `key` (canonical: see `session_key`, which
        `agent.ask` applies): directives, commands, then (if text is left) a run. An answer
        given without the model is published as a `DirectReply`."""
        agent = self.agent_of(key)
        run_id = run_id or str(uuid.uuid4())
        entry = self.sessions.get_or_reset(key)
        parsed = parse(message) if interpret_commands else ParsedMessage(message)
        replies: list[str] = list(parsed.errors)
        if parsed.directive_only:
            replies.extend(self._persist_directives(key, agent, parsed))
        for command in parsed.commands:
            replies.append(await self._command(key, agent, command.name, command.value))
        prepared = await prepare(parsed.text, attachments, self.transcribe)
        if not prepared.text.strip() and not prepared.images:
            answer = "\n".join(r for r in replies if r) or None
            if answer is not None:
                self.runs.publish(RunRef(run_id, key, agent.id), DirectReply(answer))
            return SendOutcome(key, agent.id, run_id, None, answer)
        entry = self.sessions.entry(key) or entry
        if self._rediscover:
            self._rediscover = False
            # It probes loopback ports and reads the secret store: off the event loop.
            await asyncio.to_thread(self.models.rediscover)
        if agent.auth_profile:
            await self.models.ensure_credentials(agent.auth_profile)
        turn_model = parsed.value("model") or model
        if turn_model:
            turn_model = self.check_model(turn_model, agent)
        level = parsed.value("think") or thinking or entry.thinking_level or agent.thinking
        spec = self._spec(
            key,
            agent,
            prepared.text,
            run_id,
            model=turn_model or self.model_for(agent, entry.model_override),
            thinking=_level(level),
            images=tuple(ImagePart(i.mime_type, i.data) for i in prepared.images),
            channel=channel,
            extra=extra_system_prompt,
        )
        run = self.runs.start(spec)
        return SendOutcome(key, agent.id, run_id, run, "\n".join(replies) or None)

    def deliver(self, key: str, text: str, *, run_id: str) -> str:
        """Put `text` into the session `key` as the assistant's (a delivery: `send` to a
        session) and publish it like a command's answer; returns the message id."""
        self.sessions.get_or_create(key)
        message_id = self.sessions.append(key, assistant_text_entry(text, delivered=True))
        self.runs.publish(RunRef(run_id, key, self.agent_of(key).id), DirectReply(text))
        return message_id

    def _spec(
        self,
        key: str,
        agent: AgentSettings,
        text: str,
        run_id: str,
        *,
        model: str,
        thinking: ThinkingLevel,
        images: tuple[ImagePart, ...],
        channel: str,
        extra: str,
    ) -> TurnSpec:
        settings = self.settings
        defaults = settings.agents
        skills = (self.config_dir / "skills", *(Path(d).expanduser() for d in defaults.skills_dirs))
        prompt = build_system_prompt(
            PromptContext(
                agent_id=agent.id,
                agent_name=agent.name or agent.id,
                workspace=self.workspace(agent),
                skills_dirs=skills,
                channel=channel,
                chat_type=self.sessions.parse(key).chat_type or "",
                extra=extra,
            )
        )
        return TurnSpec(
            run_id=run_id,
            agent_id=agent.id,
            session_key=key,
            message=text,
            model=model,
            fallbacks=agent.fallbacks or defaults.fallbacks,
            images=images,
            system_prompt=prompt,
            thinking=thinking,
            max_iterations=defaults.max_iterations,
            max_tokens=defaults.max_tokens,
            tool_timeout_s=defaults.tool_timeout_s,
            tool_result_max_chars=defaults.tool_result_max_chars,
            tools_allow=agent.tools_allow,
            tools_deny=agent.tools_deny,
            reserve_tokens=settings.session.compaction_reserve_tokens,
            keep_recent_tokens=settings.session.compaction_keep_recent_tokens,
            tool_services=self.tool_services,
            auth_profile=agent.auth_profile,
        )

    # ------------------------------------------------------------------ directives

    def _persist_directives(
        self, key: str, agent: AgentSettings, parsed: ParsedMessage
    ) -> list[str]:
        fields: dict[str, Any] = {}
        replies = []
        for directive in parsed.directives:
            if directive.name == "think":
                fields["thinkingLevel"] = directive.value
                replies.append(f"Thinking level set to {directive.value}.")
            elif directive.name == "verbose":
                fields["verboseLevel"] = directive.value
                replies.append(f"Verbose mode {directive.value}.")
            elif directive.name == "model":
                ref = self.check_model(directive.value, agent)
                fields["modelOverride"] = ref
                replies.append(f"Model set to {ref} for this session.")
            elif directive.name == "exec":
                for name, value in exec_options(directive.value).items():
                    fields[f"exec{name.capitalize()}"] = value
                replies.append("Exec settings saved for this session.")
        if fields:
            self.sessions.patch(key, **fields)
        return replies

    async def _command(self, key: str, agent: AgentSettings, name: str, value: str) -> str:
        if name == "help":
            return HELP_TEXT
        if name in ("reset", "new"):
            aborted = await self.runs.abort(key)
            self.sessions.reset(key)
            text = "Started a new session" + (f" (stopped {len(aborted)} reply)" if aborted else "")
            if name == "new" and value:
                ref = self.check_model(value, agent)
                self.sessions.patch(key, modelOverride=ref)
                text += f" with {ref}"
            return text + "."
        if name == "stop":
            stopped = await self.runs.abort(key)
            return f"Stopped {len(stopped)} reply." if stopped else "Nothing to stop."
        if name == "compact":
            return compaction_text(await self.compact(key, instructions=value))
        if name == "status":
            return self.status_text(key, agent)
        if name == "usage":
            if value:
                self.sessions.patch(key, responseUsage=value.lower())
                return f"Usage display: {value.lower()}."
            return self.usage_text(key)
        raise AgentError(f"unknown command /{name}")

    async def compact(self, key: str, instructions: str = "") -> Compacted | None:
        """Summarise the session's older turns now (`/compact`, `sessions.compact`); None
        when there is nothing to compact yet."""
        agent = self.agent_of(key)
        entry = self.sessions.get_or_create(key)
        spec = self._spec(
            key,
            agent,
            "",
            f"compact-{uuid.uuid4().hex[:8]}",
            model=self.model_for(agent, entry.model_override),
            thinking="off",
            images=(),
            channel="",
            extra=instructions,
        )
        return await self.runs.loop.compact(spec, force=True)

    def status_text(self, key: str, agent: AgentSettings) -> str:
        entry = self.sessions.get_or_create(key)
        ref = self.model_for(agent, entry.model_override)
        lines = [
            f"Session: {key} ({entry.session_id[:8]})",
            f"Agent: {agent.id}",
            f"Model: {ref}",
            f"Thinking: {entry.thinking_level or agent.thinking}",
            f"Messages: {entry.message_count}",
            f"Tokens: {entry.input_tokens} in, {entry.output_tokens} out, "
            f"{entry.cache_read_tokens} cache read, {entry.cache_write_tokens} cache write",
            f"Context: {entry.context_tokens} tokens; compactions: {entry.compaction_count}",
        ]
        running = self.runs.active(key)
        if running:
            lines.append(f"Running: {', '.join(r.run_id for r in running)}")
        return "\n".join(lines)

    def usage_text(self, key: str) -> str:
        summary = self.sessions.usage.summarize(session_key=key)
        lines = [f"Usage of {key}:"]
        total_cost = 0.0
        for model, totals in sorted(summary.by_model.items()):
            price = totals_cost(model, totals, self.settings.usage.prices)
            total_cost += price
            lines.append(
                f"  {model}: {totals.input} in, {totals.output} out, "
                f"{totals.cache_read} cache read, {totals.cache_write} cache write, "
                f"{totals.calls} calls, ${price:.4f}"
            )
        if len(lines) == 1:
            return f"No usage recorded for {key} yet."
        lines.append(f"  total: {summary.totals.total} tokens, ${total_cost:.4f}")
        return "\n".join(lines)

    async def close(self) -> None:
        await self.runs.close()


def _level(value: str | None) -> ThinkingLevel:
    if value in THINKING_LEVELS:
        return value
    return "off"


CHAT: ServiceKey[ChatService] = ServiceKey("the chat service")
"""For tools that hand a message to another session (`sessions_send`)."""
