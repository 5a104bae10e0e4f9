"""The chat service: turns a message for a session into a run (or a command's answer).

It picks the agent, the model (session override > agent > defaults), the thinking level,
builds the system prompt, applies directives and commands, and hands the turn to the run
manager. The gateway's `chat.*`, `agent*` and `sessions.*` methods and the OpenAI-compatible
HTTP endpoint all come through here.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from moltis_desktop.agent.directives import HELP_TEXT, ParsedMessage, exec_options, parse
from moltis_desktop.agent.loop import AgentError, AgentLoop, Compacted, TurnSpec
from moltis_desktop.agent.prompt import PromptContext, build_system_prompt
from moltis_desktop.agent.runs import EventSink, Run, RunManager
from moltis_desktop.agent.tools import ToolRegistry
from moltis_desktop.config.settings import AgentSettings, PriceSettings, Settings
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.providers.base import (
    THINKING_LEVELS,
    ImagePart,
    ModelInfo,
    Provider,
    ThinkingLevel,
    Usage,
)
from moltis_desktop.providers.pricing import cost
from moltis_desktop.sessions.store import SessionStore
from moltis_desktop.sessions.usage import UsageTotals

_LOGGER = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 6 * 1024 * 1024


class Catalog(Protocol):
    """What the service needs of the model catalogue."""

    def resolve(self, ref: str, *, auth_profile: str = "") -> tuple[Provider, ModelInfo]: ...


@dataclass(frozen=True)
class SendOutcome:
    """What `send` did: a run started, and/or an answer from a command or directive."""

    session_key: str
    agent_id: str
    run: Run | None = None
    reply: str | None = None


@dataclass(frozen=True)
class Attachment:
    """An attachment of a message: images go to the model as images, text files as text
    after the message; anything else is refused with a message saying so."""

    mime_type: str
    data: str
    """Base64."""
    name: str = ""
    """The file's name, when the client gave one."""

    @property
    def b64(self) -> str:
        """The data without a `data:…;base64,` prefix."""
        return self.data.split(",", 1)[1] if self.data.startswith("data:") else self.data

    def decoded(self, what: str) -> bytes:
        """The bytes; `what` names the attachment in the error when they are not base64."""
        try:
            return base64.b64decode(self.b64, validate=True)
        except (binascii.Error, ValueError):
            raise AgentError(f"{what} is not valid base64") from None


class _Resolver:
    """The loop's model resolver: whatever catalogue the service holds now (it is replaced
    when the providers' config changes)."""

    def __init__(self, service: ChatService) -> None:
        self._service = service

    def resolve(self, ref: str, *, auth_profile: str = "") -> tuple[Provider, ModelInfo]:
        return self._service.catalog.resolve(ref, auth_profile=auth_profile)


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
        catalog: Catalog,
        default_model: Callable[[], str],
        tools: ToolRegistry,
        state_dir: Path,
        config_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._settings = settings
        self.sessions = sessions
        self.catalog = catalog
        self.default_model = default_model
        self.state_dir = state_dir
        self.config_dir = config_dir
        self._clock = clock
        self.tools = tools
        self.extra_tool_services: dict[str, Any] = {}
        """Services the host adds for its tools (the desktop app's `canvas`)."""
        self.runs = RunManager(AgentLoop(_Resolver(self), sessions, tools), clock=clock)
        self.default_sink: EventSink = lambda run, event: None
        """Where events of runs nobody asked for go (e.g. `sessions_send`)."""
        self.refresh_credentials: Callable[[AgentSettings], Awaitable[None]] | None = None
        self.transcribe: Callable[[bytes, str], Awaitable[str]] | None = None
        """Turns a voice note (audio bytes, MIME type) into text; set by the runtime when
        voice is installed."""
        """Makes the agent's credentials fresh before a turn (OAuth refresh); the runtime
        sets it."""

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
        settings = self.settings
        agent = self.agent(agent_id)
        if not key:
            return f"agent:{agent.id.lower()}:{settings.session.main_key}"
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
            ref = self.default_model()
        if not ref:
            raise AgentError(
                "no model is configured: set agents.model, or a provider "
                "(ANTHROPIC_API_KEY, OPENAI_API_KEY, or [providers.<id>])"
            )
        return ref

    def check_model(self, ref: str, agent: AgentSettings) -> str:
        """`ref` resolved to `provider/model` (raises with what to do when unknown)."""
        _provider, info = self.catalog.resolve(ref, auth_profile=agent.auth_profile)
        return info.ref

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        session_key: str,
        message: str,
        *,
        run_id: str | None = None,
        sink: EventSink | None = None,
        thinking: str | None = None,
        model: str | None = None,
        attachments: Sequence[Attachment] = (),
        channel: str = "",
        extra_system_prompt: str = "",
        interpret_commands: bool = True,
    ) -> SendOutcome:
        """Handle one message: directives, commands, then (if text is left) a run."""
        key = self.session_key(session_key)
        agent = self.agent_of(key)
        entry = self.sessions.get_or_reset(key)
        parsed = parse(message) if interpret_commands else ParsedMessage(message)
        replies: list[str] = list(parsed.errors)
        run_text = parsed.text
        if parsed.directive_only:
            replies.extend(self._persist_directives(key, agent, parsed))
        for command in parsed.commands:
            replies.append(await self._command(key, agent, command.name, command.value))
        images = tuple(_image(a) for a in attachments if a.mime_type.startswith("image/"))
        for attachment in attachments:
            if attachment.mime_type.startswith("audio/"):
                run_text = await self._with_transcript(run_text, attachment)
        run_text += "".join(
            _text_file(a) for a in attachments if not a.mime_type.startswith(("image/", "audio/"))
        )
        if not run_text.strip() and not images:
            return SendOutcome(key, agent.id, None, "\n".join(r for r in replies if r) or None)
        entry = self.sessions.entry(key) or entry
        if self.refresh_credentials is not None and agent.auth_profile:
            await self.refresh_credentials(agent)
        turn_model = parsed.value("model") or model
        if turn_model:
            turn_model = self.check_model(turn_model, agent)
        level = parsed.value("think") or thinking or entry.thinking_level or agent.thinking
        spec = self._spec(
            key,
            agent,
            run_text,
            run_id or str(uuid.uuid4()),
            model=turn_model or self.model_for(agent, entry.model_override),
            thinking=_level(level),
            images=images,
            channel=channel,
            extra=extra_system_prompt,
        )
        run = self.runs.start(spec, sink or self.default_sink)
        return SendOutcome(key, agent.id, run, "\n".join(replies) or None)

    async def _with_transcript(self, text: str, attachment: Attachment) -> str:
        """A voice note (audio attachment) transcribed into the turn, as OpenClaw's audio
        understanding does: the transcript alone when there is no text, else after it."""
        name = attachment.name or "voice note"
        if self.transcribe is None:
            raise AgentError(
                f"{name} is audio, and voice transcription is not available here (install "
                "moltis-desktop[voice])"
            )
        raw = attachment.decoded(f"the attachment {name}")
        if len(raw) > MAX_AUDIO_ATTACHMENT_BYTES:
            raise AgentError(
                f"{name} is {len(raw) // 1024 // 1024} MiB; voice notes are limited to "
                f"{MAX_AUDIO_ATTACHMENT_BYTES // 1024 // 1024} MiB"
            )
        try:
            transcript = (await self.transcribe(raw, attachment.mime_type)).strip()
        except MoltisError as exc:
            raise AgentError(f"{name} could not be transcribed: {exc}") from None
        _LOGGER.info("transcribed %s (%d bytes) to %d characters", name, len(raw), len(transcript))
        if not text.strip():
            return transcript
        return f"{text}\n\n[Audio] {name}\nTranscript: {transcript}"

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
            tool_services={
                "sessions": self.sessions,
                "send_to_session": self._send_to_session,
                **self.extra_tool_services,
            },
            auth_profile=agent.auth_profile,
        )

    async def _send_to_session(self, session_key: str, message: str, *, origin: str) -> str:
        outcome = await self.send(
            session_key,
            message,
            extra_system_prompt=(f"This message was sent by the agent of session {origin}."),
            interpret_commands=False,
        )
        if outcome.run is None:
            raise AgentError("the message was empty")
        return outcome.run.run_id

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


def _image(attachment: Attachment) -> ImagePart:
    size = len(attachment.decoded("an image attachment"))
    if size > MAX_IMAGE_BYTES:
        raise AgentError(
            f"an image attachment is {size // 1024} KiB; the limit is "
            f"{MAX_IMAGE_BYTES // 1024 // 1024} MiB"
        )
    return ImagePart(attachment.mime_type, attachment.b64)


_TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/toml")
MAX_TEXT_ATTACHMENT_BYTES = 512 * 1024
MAX_AUDIO_ATTACHMENT_BYTES = 25 * 1024 * 1024


def _text_file(attachment: Attachment) -> str:
    """A text attachment as a fenced block appended to the message."""
    mime = attachment.mime_type.split(";")[0].strip().lower()
    name = attachment.name or "attachment"
    if not (mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+json")):
        raise AgentError(f"{name} is {mime}; only images and text files can be attached for now")
    raw = attachment.decoded(f"the attachment {name}")
    if len(raw) > MAX_TEXT_ATTACHMENT_BYTES:
        raise AgentError(
            f"{name} is {len(raw) // 1024} KiB; text attachments are limited to "
            f"{MAX_TEXT_ATTACHMENT_BYTES // 1024} KiB"
        )
    text = raw.decode("utf-8", errors="replace")
    fence = "````" if "```" in text else "```"
    return f"\n\n{name}:\n{fence}\n{text.rstrip()}\n{fence}"


def attachments_from(raw: Sequence[Mapping[str, Any]] | None) -> list[Attachment]:
    """`chat.send` / `agent` attachments (`{type, mimeType, content}`) that carry data."""
    out = []
    for item in raw or ():
        mime = str(item.get("mimeType") or item.get("type") or "")
        content = item.get("content") or item.get("data")
        name = str(item.get("fileName") or item.get("name") or "")
        if isinstance(content, str) and "/" in mime:
            out.append(Attachment(mime, content, name))
    return out
