"""The composition root: builds config, logging, secrets and the gateway, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets as _secrets
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from moltis_desktop.config.secrets import SecretStore, SecretStoreError, terminal_passphrase
from moltis_desktop.config.settings import AgentSettings, Settings
from moltis_desktop.config.store import ConfigSnapshot, ConfigStore
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import REDACTOR, configure_logging
from moltis_desktop.core.paths import AppPaths
from moltis_desktop.gateway.auth import SharedSecret
from moltis_desktop.gateway.server import GatewayServer

if TYPE_CHECKING:
    from moltis_desktop.gateway.services import AgentServices

_LOGGER = logging.getLogger(__name__)

TOKEN_ENV = "MOLTIS_TOKEN"
PASSWORD_ENV = "MOLTIS_PASSWORD"


def log_file_for(paths: AppPaths, settings: Settings) -> Path:
    """The JSON log file in use."""
    if settings.logging.file:
        return Path(settings.logging.file).expanduser()
    return paths.log_dir / "moltis.log"


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
        self.config: ConfigStore | None = None
        self.secrets: SecretStore | None = None
        self.gateway: GatewayServer | None = None
        self.services: AgentServices | None = None
        self.provider_specs: list[Any] = []
        self._retired: list[Any] = []
        self.auth: Any = None
        """The OAuth sign-in manager, made on first need."""
        self._agent_task: asyncio.Task[None] | None = None
        self._voice_task: asyncio.Task[None] | None = None
        self.ephemeral_secret = False

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
        self._configure_logging(Settings())
        self.config = ConfigStore(self.paths.config_file, env=self.env, overrides=self.overrides)
        settings = self.config.current.settings
        self._configure_logging(settings)
        self.secrets = SecretStore(
            self.paths.state_dir, backend=settings.secrets.backend, env=self.env, prompt=self.prompt
        )
        shared = self.resolve_shared_secret(settings)
        self.gateway = GatewayServer(
            self.config,
            shared_secret=shared,
            log_file=log_file_for(self.paths, settings),
            state_dir=self.paths.state_dir,
            secrets=self.secrets,
        )
        self.config.subscribe(self._on_config_changed)
        self._init_voice(settings)
        await self.gateway.start()
        # The agent side (providers, sessions, tools) loads once the gateway answers: its
        # imports would otherwise double the start-up time. Until then its methods answer
        # OpenClaw's retryable "starting" error.
        self.gateway.agent_loading = True
        self._agent_task = asyncio.get_running_loop().create_task(self._load_agent(settings))
        return self.gateway

    async def _load_agent(self, settings: Settings) -> None:
        try:
            services = await asyncio.to_thread(self._agent_services, settings)
        except Exception:
            _LOGGER.exception("the agent could not start; chat is unavailable")
            if self.gateway is not None:
                self.gateway.agent_loading = False
            return
        self.services = services
        assert self.gateway is not None
        self.gateway.attach_services(services)
        # Everything loaded so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise stall the loop (~100 ms) mid-stream.
        import gc

        gc.collect()
        gc.freeze()
        self._connect_voice(services)

    def _init_voice(self, settings: Settings) -> None:
        """The voice model manager and service (light: engines load on first use)."""
        from functools import partial

        from moltis_desktop.gateway.voice_chat import voice_event_to_gateway
        from moltis_desktop.voice.models import ModelManager
        from moltis_desktop.voice.service import VoiceService

        assert self.gateway is not None
        assert self.config is not None
        config = self.config
        mirror = self.env.get("MOLTIS_MODEL_MIRROR") or settings.voice.model_mirror
        models = ModelManager(self.paths.cache_dir / "voice", mirror=mirror)
        voice = VoiceService(
            models,
            settings=lambda: config.current.settings.voice,
            openai_credentials=self._openai_credentials,
            recordings_dir=self.paths.state_dir / "voice" / "recordings",
        )
        voice.observers.append(partial(voice_event_to_gateway, self.gateway))
        self.gateway.voice_models = models
        self.gateway.voice = voice

    def _openai_credentials(self) -> tuple[str | None, str]:
        """(API key, base URL) of the provider OpenAI speech uses (`voice.tts.openai_provider`)."""
        if self.services is None:
            return None, ""
        registry = self.services.registry
        assert self.config is not None
        provider = self.config.current.settings.voice.tts.openai_provider
        try:
            key = registry.resolve_key(provider)
            base_url = registry.config(provider).base_url
        except Exception:  # not configured: OpenAI speech is simply unavailable
            return None, ""
        return (key.value if key else None), base_url

    def _connect_voice(self, services: AgentServices) -> None:
        """Voice notes in chat are transcribed, spoken questions reach the assistant, and
        listening starts when the config says so."""
        from functools import partial

        from moltis_desktop.gateway.voice_chat import ask_assistant

        gateway = self.gateway
        assert gateway is not None
        voice = gateway.voice
        if voice is None:
            return

        async def transcribe(data: bytes, mime: str) -> str:
            return str((await voice.transcribe_audio(data)).text)

        services.chat.transcribe = transcribe
        voice.ask = partial(ask_assistant, gateway)
        if gateway.settings.voice.enabled:
            self._voice_task = asyncio.get_running_loop().create_task(self._start_voice())

    async def _start_voice(self) -> None:
        assert self.gateway is not None
        try:
            await self.gateway.voice.start()
        except MoltisError as exc:
            _LOGGER.error("voice is on in the config but cannot start: %s", exc)
        except Exception:
            _LOGGER.exception("voice could not start")

    async def agent_ready(self) -> None:
        """Wait until the agent side is loaded (or has failed to)."""
        if self._agent_task is not None:
            await asyncio.shield(self._agent_task)

    def _agent_services(self, settings: Settings) -> AgentServices:
        """Plugins, tools, providers, models, sessions and the chat service."""
        from moltis_desktop.agent.service import ChatService
        from moltis_desktop.agent.tools import ToolRegistry
        from moltis_desktop.gateway.services import AgentServices
        from moltis_desktop.plugins.manager import collect, load_plugins, plugin_names
        from moltis_desktop.sessions.store import SessionStore

        pm, errors = load_plugins()
        self.provider_specs = collect(pm, "register_providers")
        tools = ToolRegistry(collect(pm, "register_tools"))
        registry, catalog = self._models(settings)
        sessions = SessionStore(
            self.paths.state_dir, settings=settings.session, default_agent=settings.agents.default
        )
        assert self.config is not None
        config = self.config
        chat = ChatService(
            settings=lambda: config.current.settings,
            sessions=sessions,
            catalog=catalog,
            default_model=registry.default_model,
            tools=tools,
            state_dir=self.paths.state_dir,
            config_dir=self.paths.config_dir,
        )
        chat.refresh_credentials = self._refresh_credentials
        return AgentServices(chat, catalog, registry, plugin_names(pm), errors)

    async def _refresh_credentials(self, agent: AgentSettings) -> None:
        """Before a turn of an agent signed in with OAuth: refresh its access token when it
        is about to expire, and have the provider use the fresh one."""
        assert self.config is not None
        assert self.secrets is not None
        assert self.services is not None
        profile = self.config.current.settings.auth_profiles.get(agent.auth_profile)
        if profile is None or profile.kind != "oauth":
            return
        if self.auth is None:
            from moltis_desktop.providers.oauth import AuthManager

            self.auth = AuthManager(
                self.secrets,
                self.config.current.settings.auth_profiles,
                state_dir=self.paths.state_dir,
                env=self.env,
            )
        token = await self.auth.access_token(agent.auth_profile)
        self.services.registry.use_credential(profile.provider, agent.auth_profile, token)

    def _models(self, settings: Settings) -> tuple[Any, Any]:
        from moltis_desktop.providers.registry import ModelCatalog, ProviderRegistry

        registry = ProviderRegistry(
            settings, specs=self.provider_specs, secrets=self.secrets, env=self.env
        )
        return registry, ModelCatalog(registry)

    def resolve_shared_secret(self, settings: Settings) -> SharedSecret:
        """The token/password clients must present, from the environment or the secret store.

        A token is created on first start. When no secret store is usable (no keyring, no
        passphrase for the encrypted file), the gateway still starts, with a token that lasts
        this run only; the log says how to make it permanent.
        """
        auth = settings.gateway.auth
        assert self.secrets is not None
        self.ephemeral_secret = False
        if auth.mode == "none":
            return SharedSecret("none")
        if auth.mode == "password":
            password = self.env.get(PASSWORD_ENV)
            if not password:
                try:
                    password = self.secrets.get(auth.password_secret)
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
            token = self.secrets.get_or_create(auth.token_secret)
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
            self._show_ephemeral_token(token)
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
            return "token valid for this run only"
        return f"token: `moltis secrets get {auth.token_secret}`"

    def _show_ephemeral_token(self, token: str) -> None:
        # Straight to the user's terminal, never through logging (which may reach files).
        if self.console is not None and self.console.isatty():
            print(f"Gateway token for this run: {token}", file=self.console)

    def _on_config_changed(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        self._update_agent(old.settings, new.settings)
        self._update_gateway(old, new)

    def _update_agent(self, old: Settings, new: Settings) -> None:
        services = self.services
        if services is None:
            return
        services.chat.sessions.update_settings(new.session, new.agents.default)
        if self.auth is not None:
            self.auth.update_profiles(new.auth_profiles)
        model_inputs = ("providers", "auth_profiles", "models")
        if (
            any(getattr(old, n) != getattr(new, n) for n in model_inputs)
            or old.agents.model != new.agents.model
        ):
            registry, catalog = self._models(new)
            self._retired.append(services.catalog)
            services.registry, services.catalog = registry, catalog
            services.chat.catalog = catalog
            services.chat.default_model = registry.default_model
            _LOGGER.info("providers reconfigured: %s", ", ".join(registry.configs) or "none")

    def _update_gateway(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        if old.settings.logging != new.settings.logging:
            self._configure_logging(new.settings)
        if old.settings.gateway.auth != new.settings.gateway.auth and self.gateway is not None:
            self.gateway.shared_secret = self.resolve_shared_secret(new.settings)
            _LOGGER.info("gateway auth settings changed (mode %s)", new.settings.gateway.auth.mode)

    async def stop(self) -> None:
        """Stop replies in flight, then the gateway (clients get `shutdown`, then close
        1012), then the providers' connections."""
        if self._agent_task is not None:
            with contextlib.suppress(Exception):
                await self._agent_task
        if self.gateway is not None and self.gateway.voice is not None:
            await self.gateway.voice.stop()
            await self.gateway.voice.models.aclose()
        if self.services is not None:
            await self.services.chat.close()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.services is not None:
            # Replaced catalogues (and their providers) are kept until now: a reply may
            # still have been streaming through them.
            for catalog in [*self._retired, self.services.catalog]:
                await catalog.close()
                await catalog.registry.close()
            self._retired.clear()


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
