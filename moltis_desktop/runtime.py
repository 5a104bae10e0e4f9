"""The composition root: builds config, logging, secrets, voice, the gateway and the agent
side as one typed `Services`, and starts and stops them through one `AsyncExitStack`.

Adding a capability (channels, cron, memory, …) is one package, one
`gateway/methods/<area>.py`, and one line here (`docs/ARCHITECTURE.md` has the recipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets as _secrets
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from moltis_desktop.config.secrets import SecretStore, SecretStoreError, terminal_passphrase
from moltis_desktop.config.settings import Settings
from moltis_desktop.config.store import ConfigSnapshot, ConfigStore
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.keys import ServiceMap
from moltis_desktop.core.logging import REDACTOR, configure_logging
from moltis_desktop.core.paths import AppPaths, gateway_socket_path, tighten_state_dir
from moltis_desktop.gateway.auth import SharedSecret
from moltis_desktop.gateway.server import GatewayServer

if TYPE_CHECKING:
    from moltis_desktop.gateway.services import AgentServices
    from moltis_desktop.media.attachments import Transcribe
    from moltis_desktop.providers.local_catalog import LocalModelManager
    from moltis_desktop.voice.service import VoiceService

_LOGGER = logging.getLogger(__name__)

TOKEN_ENV = "MOLTIS_TOKEN"
PASSWORD_ENV = "MOLTIS_PASSWORD"
START_LINK_TTL_MS = 10 * 60_000
"""How long the sign-in link printed at start works (once), when the token is for this run
only: long enough to read the start-up output, short enough to be worthless later."""


def log_file_for(paths: AppPaths, settings: Settings) -> Path:
    """The JSON log file in use."""
    if settings.logging.file:
        return Path(settings.logging.file).expanduser()
    return paths.log_dir / "moltis.log"


@dataclass
class Services:
    """Everything the runtime built, typed."""

    config: ConfigStore
    secrets: SecretStore
    shared: ServiceMap
    """Services by typed key, for tools and method handlers (what capabilities add)."""
    gateway: GatewayServer
    voice: VoiceService | None
    """Speech on this machine (its model manager is `voice.models`)."""
    agent: AgentServices | None = None
    """The agent side (plugins, tools, models, sessions, chat), once loaded: it loads just
    after the gateway listens."""


class Runtime:
    """Everything Moltis runs, wired together. Used by the headless gateway and the tray app."""

    def __init__(
        self,
        *,
        paths: AppPaths | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        console: TextIO | None = sys.stderr,
        prompt: Callable[[bool], str] | None = terminal_passphrase,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.paths = paths or AppPaths.resolve(self.env)
        self.overrides = dict(overrides or {})
        self.console = console
        self.prompt = prompt
        self.services: Services | None = None
        """What `start` built (None before it)."""
        self._stack = contextlib.AsyncExitStack()
        self._agent_task: asyncio.Task[None] | None = None
        self._voice_task: asyncio.Task[None] | None = None
        self.ephemeral_secret = False

    @property
    def config(self) -> ConfigStore | None:
        return self.services.config if self.services is not None else None

    @property
    def secrets(self) -> SecretStore | None:
        return self.services.secrets if self.services is not None else None

    @property
    def gateway(self) -> GatewayServer | None:
        return self.services.gateway if self.services is not None else None

    @property
    def agent(self) -> AgentServices | None:
        """The agent side, once loaded."""
        return self.services.agent if self.services is not None else None

    def _configure_logging(self, settings: Settings) -> None:
        log = settings.logging
        configure_logging(
            level=log.level,
            log_file=log_file_for(self.paths, settings),
            max_bytes=log.max_bytes,
            backups=log.backups,
            console=self.console,
        )

    async def start(self) -> GatewayServer:
        """Load everything and start the gateway; returns it once it accepts clients."""
        self.paths.ensure()
        tighten_state_dir(self.paths.state_dir)  # older versions made it readable by others
        self._configure_logging(Settings())
        config = ConfigStore(self.paths.config_file, env=self.env, overrides=self.overrides)
        settings = config.current.settings
        self._configure_logging(settings)
        secrets = SecretStore(
            self.paths.state_dir, backend=settings.secrets.backend, env=self.env, prompt=self.prompt
        )
        shared = ServiceMap()
        voice = self._voice(config)
        local_models = self._local_models(settings)
        gateway = GatewayServer(
            config,
            shared_secret=self.resolve_shared_secret(settings, secrets),
            log_file=log_file_for(self.paths, settings),
            state_dir=self.paths.state_dir,
            secrets=secrets,
            voice=voice,
            voice_models=voice.models,
            local_models=local_models,
            services=shared,
            owner_socket=gateway_socket_path(self.paths, self.env),
        )
        self.services = Services(config, secrets, shared, gateway, voice)
        config.subscribe(self._on_config_changed)
        self._stack = contextlib.AsyncExitStack()
        # The providers close last (a reply may still be streaming until the gateway has
        # stopped); the gateway stops even when its listener could not bind.
        self._stack.push_async_callback(self._close_models)
        self._stack.push_async_callback(gateway.stop)
        self._stack.push_async_callback(local_models.aclose)  # downloads in flight
        await gateway.start()
        if self.ephemeral_secret:
            self._show_sign_in(gateway)
        # The agent side (providers, sessions, tools) loads once the gateway answers: its
        # imports would otherwise double the start-up time. Until then its methods answer
        # OpenClaw's retryable "starting" error.
        gateway.state.agent_loading = True
        self._agent_task = asyncio.get_running_loop().create_task(self._load_agent(settings))
        return gateway

    async def _load_agent(self, settings: Settings) -> None:
        services = self.services
        assert services is not None
        try:
            agent = await asyncio.to_thread(self._build_agent, settings)
        except Exception:
            _LOGGER.exception("the agent could not start; chat is unavailable")
            services.gateway.state.agent_loading = False
            agent = None
        if agent is not None:
            self._stack.push_async_callback(agent.chat.close)  # replies in flight stop
            services.agent = agent
            services.gateway.attach_agent(agent)
            # Everything loaded so far lives as long as the process: keep it out of the
            # garbage collector's full passes, which otherwise stall the loop (~100 ms)
            # mid-stream.
            gc.collect()
            gc.freeze()
        if services.voice is not None:
            # Voice stops first: it must not ask the agent while the rest shuts down.
            self._stack.push_async_callback(services.voice.models.aclose)  # downloads
            self._stack.push_async_callback(services.voice.stop)
            if services.config.current.settings.voice.enabled and agent is not None:
                self._voice_task = asyncio.get_running_loop().create_task(
                    self._start_voice(services.voice)
                )

    async def _close_models(self) -> None:
        if self.agent is not None:
            await self.agent.models.close()

    def _build_agent(self, settings: Settings) -> AgentServices:
        """Plugins, tools, models, sessions and the chat service (in a worker thread)."""
        from moltis_desktop.agent.service import ChatService
        from moltis_desktop.gateway.services import AgentServices
        from moltis_desktop.plugins.manager import load
        from moltis_desktop.providers.models import Models
        from moltis_desktop.sessions.store import SessionStore

        services = self.services
        assert services is not None
        plugins = load()
        models = Models(
            settings,
            specs=plugins.providers,
            secrets=services.secrets,
            env=self.env,
            state_dir=self.paths.state_dir,
            local_models=services.gateway.state.local_models,  # one manager: the gateway's
        )
        sessions = SessionStore(
            self.paths.state_dir, settings=settings.session, default_agent=settings.agents.default
        )
        config = services.config
        chat = ChatService(
            settings=lambda: config.current.settings,
            sessions=sessions,
            models=models,
            tools=plugins.tools,
            tool_services=services.shared,
            state_dir=self.paths.state_dir,
            config_dir=self.paths.config_dir,
            transcribe=_transcriber(services.voice) if services.voice is not None else None,
        )
        return AgentServices(chat, models, plugins.report)

    def _local_models(self, settings: Settings) -> LocalModelManager:
        """The local chat models' manager (light: a catalog and a directory)."""
        from moltis_desktop.modelstore.manager import mirror_from
        from moltis_desktop.providers.local_catalog import CACHE_SUBDIR, LocalModelManager

        mirror = mirror_from(settings.models.local.mirror, self.env)
        return LocalModelManager(self.paths.cache_dir / CACHE_SUBDIR, mirror=mirror)

    # ------------------------------------------------------------------ voice

    def _voice(self, config: ConfigStore) -> VoiceService:
        """The voice service and its model manager (light: engines load on first use)."""
        from moltis_desktop.voice.models import ModelManager
        from moltis_desktop.voice.service import VoiceService

        settings = config.current.settings
        mirror = self.env.get("MOLTIS_MODEL_MIRROR") or settings.voice.model_mirror
        models = ModelManager(self.paths.cache_dir / "voice", mirror=mirror)
        voice = VoiceService(
            models,
            settings=lambda: config.current.settings.voice,
            openai_credentials=self._openai_credentials,
            recordings_dir=self.paths.state_dir / "voice" / "recordings",
            ask=self._voice_ask,
        )
        return voice

    async def _voice_ask(self, text: str) -> str:
        """A spoken question, through the same path as typed chat (every chat window shows
        the turn); the reply's text comes back to be spoken."""
        from moltis_desktop.agent.ask import ask
        from moltis_desktop.voice.errors import VoiceError

        agent = self.agent
        if agent is None or self.services is None:
            raise VoiceError("the assistant is still starting; ask again in a moment")
        talk = self.services.config.current.settings.voice.talk
        reply = await ask(
            agent.chat,
            text,
            session_key=talk.session_key,
            run_id=f"voice-{uuid.uuid4()}",
            timeout_s=talk.reply_timeout_s,
            channel="voice",
        )
        if reply.status == "timeout":
            raise VoiceError("the assistant did not answer in time")
        if reply.status == "error":
            raise VoiceError(f"the assistant could not answer: {reply.error}")
        return reply.text if reply.status == "ok" else ""

    def _openai_credentials(self) -> tuple[str | None, str]:
        """(API key, base URL) of the provider OpenAI speech uses (`voice.tts.openai_provider`)."""
        agent = self.agent
        if agent is None or self.services is None:
            return None, ""
        registry = agent.models.registry
        provider = self.services.config.current.settings.voice.tts.openai_provider
        try:
            key = registry.resolve_key(provider)
            base_url = registry.config(provider).base_url
        except Exception:  # not configured: OpenAI speech is simply unavailable
            return None, ""
        return (key.value if key else None), base_url

    async def _start_voice(self, voice: VoiceService) -> None:
        try:
            await voice.start()
        except MoltisError as exc:
            _LOGGER.error("voice is on in the config but cannot start: %s", exc)
        except Exception:
            _LOGGER.exception("voice could not start")

    async def agent_ready(self) -> None:
        """Wait until the agent side is loaded (or has failed to)."""
        if self._agent_task is not None:
            await asyncio.shield(self._agent_task)

    def resolve_shared_secret(self, settings: Settings, secrets: SecretStore) -> SharedSecret:
        """The token/password clients must present, from the environment or the secret store.

        A token is created on first start. When no secret store is usable (no keyring, no
        passphrase for the encrypted file), the gateway still starts, with a token that lasts
        this run only; the log says how to make it permanent.
        """
        auth = settings.gateway.auth
        self.ephemeral_secret = False
        if auth.mode == "none":
            return SharedSecret("none")
        if auth.mode == "password":
            password = self.env.get(PASSWORD_ENV)
            if not password:
                try:
                    password = secrets.get(auth.password_secret)
                except SecretStoreError as exc:
                    _LOGGER.error("cannot read the gateway password: %s", exc)
            if not password:
                _LOGGER.error(
                    "auth mode is `password` but no password is set: run `moltis "
                    "secrets set %s` or set %s; every connect is refused until then",
                    auth.password_secret,
                    PASSWORD_ENV,
                )
            REDACTOR.add(password)
            return SharedSecret("password", password=password)
        token = self.env.get(TOKEN_ENV)
        if token:
            REDACTOR.add(token)
            return SharedSecret("token", token=token)
        try:
            token = secrets.get_or_create(auth.token_secret)
        except SecretStoreError as exc:
            token = _secrets.token_urlsafe(32)
            REDACTOR.add(token)
            self.ephemeral_secret = True
            _LOGGER.warning(
                "the gateway token cannot be kept (%s); using a token for this run only. To "
                "keep one: set %s, or %s, or use an OS keyring",
                exc,
                TOKEN_ENV,
                "MOLTIS_SECRETS_PASSPHRASE",
            )
        return SharedSecret("token", token=token)

    def auth_hint(self) -> str:
        """How a client gets in, for the start-up message (never the secret itself)."""
        assert self.config is not None
        auth = self.config.current.settings.gateway.auth
        if auth.mode == "none":
            return "no auth: loopback clients only"
        if auth.mode == "password":
            return f"password from {PASSWORD_ENV} or `moltis secrets get {auth.password_secret}`"
        if self.env.get(TOKEN_ENV):
            return f"token from {TOKEN_ENV}"
        if self.ephemeral_secret:
            if self.gateway is not None and self.gateway.owner_socket is not None:
                return "token valid for this run only; `moltis` commands need none here"
            return "token valid for this run only"
        return f"token: `moltis secrets get {auth.token_secret}`"

    def _show_sign_in(self, gateway: GatewayServer) -> None:
        """With a token for this run only: how to sign in. The token and a one-time link
        (ten minutes, once) go straight to the user's terminal, never through logging
        (which reaches files, and the journal other users may read); the log says how
        local tools get in without them."""
        secret = gateway.state.shared_secret
        if self.console is not None and self.console.isatty() and secret.token:
            ticket = gateway.state.ui_tickets.mint(START_LINK_TTL_MS)
            print(f"Gateway token for this run: {secret.token}", file=self.console)
            print(
                f"Sign in to the web app (this link works once, within 10 minutes): "
                f"{gateway.http_url}/#ticket={ticket}",
                file=self.console,
            )
        if gateway.owner_socket is not None:
            _LOGGER.info(
                "this user's `moltis` commands sign in through %s without the token; "
                "`moltis dashboard` opens the web app signed in",
                gateway.owner_socket,
            )

    def _on_config_changed(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        self._update_agent(old.settings, new.settings)
        self._update_gateway(old, new)

    def _update_agent(self, old: Settings, new: Settings) -> None:
        agent = self.agent
        if agent is None:
            return
        agent.chat.sessions.update_settings(new.session, new.agents.default)
        agent.models.reconfigure(new)

    def _update_gateway(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        if old.settings.logging != new.settings.logging:
            self._configure_logging(new.settings)
        services = self.services
        if old.settings.gateway.auth != new.settings.gateway.auth and services is not None:
            secret = self.resolve_shared_secret(new.settings, services.secrets)
            services.gateway.state.shared_secret = secret
            if self.ephemeral_secret:
                self._show_sign_in(services.gateway)
            _LOGGER.info("gateway auth settings changed (mode %s)", new.settings.gateway.auth.mode)

    async def stop(self) -> None:
        """Stop voice and the replies in flight, then the gateway (clients get `shutdown`,
        then close 1012), then the providers' connections: the start in reverse."""
        if self._agent_task is not None:
            with contextlib.suppress(Exception):
                await self._agent_task
        await self._stack.aclose()


def _transcriber(voice: VoiceService) -> Transcribe:
    """Voice notes in chat, as text, by the voice service's transcriber."""

    async def transcribe(data: bytes, mime: str) -> str:
        return str((await voice.transcribe_audio(data)).text)

    return transcribe


async def serve_until_signalled(runtime: Runtime, stop: asyncio.Event | None = None) -> int:
    """Start, then run until SIGINT/SIGTERM (or `stop` is set); returns an exit code."""

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        gateway = await runtime.start()
    except MoltisError as exc:
        _LOGGER.error("%s", exc)
        return exc.exit_code
    _LOGGER.info(
        "ready: %s (config %s; %s)", gateway.url, runtime.paths.config_file, runtime.auth_hint()
    )
    await stop.wait()
    await runtime.stop()
    return 0


def run_headless(
    *, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Run the gateway without a GUI on the fastest available event loop."""
    runtime = Runtime(overrides=overrides, env=env)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or uvloop missing
        return asyncio.run(serve_until_signalled(runtime))
    return int(uvloop.run(serve_until_signalled(runtime)))
