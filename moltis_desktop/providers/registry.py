"""The configured providers and the model catalogue.

`ProviderRegistry` turns `Settings.providers` + the presets + the plugin-registered
`ProviderSpec`s (keyed by wire kind) into `Provider` instances, each with the key found
first in: the agent's auth profile, the secret store, the environment. With no
`[providers]` at all it enables what is there, in this order: a key in the secret store or
the environment (Anthropic, OpenAI), else a running Ollama or LM Studio, and always the
embedded local model (`local`), which answers when nothing else does. `ModelCatalog`
merges the config's models, the presets' known models and what each provider's model list
says (cached, refreshed in the background), and resolves `provider/model` references for
the agent loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from moltis_desktop.config.secrets import SecretStore, SecretStoreError
from moltis_desktop.config.settings import ModelEntry, ProviderSettings, Settings
from moltis_desktop.core.logging import REDACTOR
from moltis_desktop.providers.base import ModelInfo, Provider, ProviderError, ProviderSpec
from moltis_desktop.providers.local import LocalEngine, LocalProvider
from moltis_desktop.providers.presets import PRESETS, KnownModel
from moltis_desktop.providers.resolved import ProviderConfig, ProviderConfigError, resolve_config

if TYPE_CHECKING:
    from moltis_desktop.providers.local_catalog import LocalModelManager

_LOGGER = logging.getLogger(__name__)

AUTO_ORDER = ("anthropic", "openai")
"""Providers enabled without config when their key is found, in order of preference."""
LOCAL_SERVERS = ("ollama", "lmstudio")
"""Local servers enabled without config (and without a key) when they answer."""
LOCAL_FALLBACK = "local"
"""The embedded model: enabled without config, the default when nothing else is found."""
PROBE_TIMEOUT_S = 0.5


def probe_local_server(base_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> list[str] | None:
    """The model ids an OpenAI-compatible local server lists at `<base_url>/models`, or
    None when nothing answers there (a refused connection costs no wait on loopback)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base_url.rstrip("/") + "/models")
    if parts.scheme != "http" or not parts.hostname:
        return None
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        connection.request("GET", parts.path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return None
        body = json.loads(response.read(1_000_000))
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]


@dataclass(frozen=True)
class KeySource:
    """A key and where it came from (for `moltis models` / logs; never the value)."""

    value: str
    origin: str


class ProviderRegistry:
    """Provider instances by id (and auth profile), built on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        specs: Iterable[ProviderSpec] | None = None,
        secrets: SecretStore | None = None,
        env: Mapping[str, str] | None = None,
        local_models: LocalModelManager | None = None,
        local_engine: LocalEngine | None = None,
        probe_local_servers: bool = True,
    ) -> None:
        """`local_models`: the local model manager (`providers.local_catalog`) the `local`
        provider finds its models with; `probe_local_servers`: look for a running Ollama /
        LM Studio when `[providers]` is empty."""
        if specs is None:
            from moltis_desktop.providers.builtin import SPECS

            specs = SPECS
        self.settings = settings
        self._specs = {spec.kind: spec for spec in specs}
        self._secrets = secrets
        self._env = os.environ if env is None else env
        self.local_models = local_models
        self.local_engine = local_engine
        self._probe = probe_local_servers
        self._server_models: dict[str, str] = {}
        """The first model a probed local server listed, by provider id."""
        self._instances: dict[tuple[str, str], Provider] = {}
        self._instance_keys: dict[tuple[str, str], str | None] = {}
        self._retired: list[Provider] = []
        self._store_warned = False
        self.configs: dict[str, ProviderConfig] = {}
        """Enabled, usable providers by id, in config order."""
        self.errors: dict[str, str] = {}
        """Providers left out, with why."""
        self.auto_enabled: dict[str, str] = {}
        """Providers enabled without config (no `[providers]`), with the reason."""
        self._configure()

    # ------------------------------------------------------------------ configuration

    def _configure(self) -> None:
        providers = self.settings.providers or self._auto_providers()
        for pid, provider_settings in providers.items():
            if not provider_settings.enabled:
                continue
            try:
                config = resolve_config(pid, provider_settings, self._env)
            except ProviderConfigError as exc:
                self.errors[pid] = exc.message
                _LOGGER.warning("provider %s left out: %s", pid, exc.message)
                continue
            if config.kind not in self._specs and config.kind != "local":
                self.errors[pid] = (
                    f"no plugin provides the {config.kind!r} wire API (providers.{pid}.kind)"
                )
                _LOGGER.warning("provider %s left out: %s", pid, self.errors[pid])
                continue
            self.configs[pid] = config

    def _auto_providers(self) -> dict[str, ProviderSettings]:
        for pid in AUTO_ORDER:
            preset = PRESETS[pid]
            if self._env.get(preset.api_key_env):
                self.auto_enabled[pid] = f"{preset.api_key_env} is set"
            elif self._secret(f"{pid}-api-key") is not None:
                self.auto_enabled[pid] = f"the secret {pid}-api-key exists"
        if not self.auto_enabled and self._probe:
            for pid in LOCAL_SERVERS:
                base_url = resolve_config(pid, None, self._env).base_url
                models = probe_local_server(base_url)
                if models:
                    preset = PRESETS[pid]
                    self._server_models[pid] = (
                        preset.default_model if preset.default_model in models else models[0]
                    )
                    self.auto_enabled[pid] = (
                        f"no API key found: {preset.label} answers at {base_url}"
                    )
                    break
        reason = (
            "the embedded local model (no key, no local server found)"
            if not self.auto_enabled
            else "the embedded local model"
        )
        self.auto_enabled[LOCAL_FALLBACK] = reason
        default = next(iter(self.auto_enabled))
        _LOGGER.info(
            "no providers configured: enabled %s; the default is %s (%s)",
            ", ".join(self.auto_enabled),
            default,
            self.auto_enabled[default],
        )
        return {pid: ProviderSettings() for pid in self.auto_enabled}

    @property
    def default_provider(self) -> str | None:
        """The provider of `agents.model`, else the first enabled one."""
        model = self.settings.agents.model
        if model and "/" in model:
            return model.partition("/")[0]
        return next(iter(self.configs), None)

    def default_model(self) -> str:
        """`agents.model`, else the first provider's default model (`provider/model`)."""
        if self.settings.agents.model:
            return self.settings.agents.model
        pid = self.default_provider
        if pid is None:
            raise ProviderConfigError(
                "no LLM provider is configured: set ANTHROPIC_API_KEY or OPENAI_API_KEY, or add "
                "a [providers.<id>] table to the config"
            )
        config = self.configs[pid]
        if config.kind == "local":
            local = self.get(pid)
            assert isinstance(local, LocalProvider)
            return f"{pid}/{local.default_model() or 'default'}"
        model = (
            self._server_models.get(pid)
            or config.preset.default_model
            or next(iter(config.settings.models), "")
        )
        return f"{pid}/{model}" if model else ""

    def config(self, provider_id: str) -> ProviderConfig:
        """The config of an enabled provider."""
        config = self.configs.get(provider_id)
        if config is not None:
            return config
        if provider_id in self.errors:
            raise ProviderConfigError(
                f"provider {provider_id} is unusable: {self.errors[provider_id]}"
            )
        if provider_id in PRESETS:
            raise ProviderConfigError(
                f"provider {provider_id} is not enabled: add [providers.{provider_id}] to the "
                "config"
            )
        raise ProviderConfigError(
            f"unknown provider {provider_id!r}: run `moltis models` to see the available ones"
        )

    # ------------------------------------------------------------------ keys

    def _secret(self, name: str) -> str | None:
        if self._secrets is None:
            return None
        try:
            # Only names the store has recorded: a provider without a stored key must not
            # open the encrypted file (which may ask for a passphrase).
            if name not in self._secrets.names():
                return None
            return self._secrets.get(name)
        except SecretStoreError as exc:
            if not self._store_warned:
                self._store_warned = True
                _LOGGER.warning("the secret store is unavailable for API keys: %s", exc.message)
            return None

    def resolve_key(self, provider_id: str, auth_profile: str = "") -> KeySource | None:
        """The key for `provider_id`: the auth profile's secret (when given), else the
        secret-store entry, else the environment variable; None when there is none."""
        config = self.config(provider_id)
        if auth_profile:
            return self._profile_key(provider_id, auth_profile)
        value = self._secret(config.api_key_secret)
        if value:
            return KeySource(value, f"secret {config.api_key_secret}")
        if config.api_key_env:
            value = self._env.get(config.api_key_env, "")
            if value:
                REDACTOR.add(value)
                return KeySource(value, f"environment variable {config.api_key_env}")
        return None

    def _profile_key(self, provider_id: str, name: str) -> KeySource:
        profile = self.settings.auth_profiles.get(name)
        if profile is None:
            raise ProviderConfigError(
                f"unknown auth profile {name!r}: add [auth_profiles.{name}] to the config"
            )
        if profile.provider != provider_id:
            raise ProviderConfigError(
                f"auth profile {name} is for {profile.provider}, not {provider_id}"
            )
        secret = profile.secret or f"auth-{name}"
        value = self._secret(secret)
        if not value:
            raise ProviderError(
                provider_id,
                "auth",
                f"auth profile {name} has no credentials: run `moltis secrets set {secret}`",
            )
        if profile.kind == "oauth":
            # OAuth tokens are stored as the JSON `moltis auth login` wrote.
            with contextlib.suppress(ValueError, AttributeError):
                value = str(json.loads(value).get("access_token") or value)
            REDACTOR.add(value)
        return KeySource(value, f"auth profile {name}")

    # ------------------------------------------------------------------ instances

    def get(self, provider_id: str, *, auth_profile: str = "") -> Provider:
        """The provider instance (built on first use; the SDK loads on its first call)."""
        key = (provider_id, auth_profile)
        provider = self._instances.get(key)
        if provider is None:
            config = self.config(provider_id)
            source = self.resolve_key(provider_id, auth_profile)
            if source is not None:
                _LOGGER.debug("provider %s: key from %s", provider_id, source.origin)
            if config.kind == "local":
                provider = LocalProvider(
                    config, self.settings.models.local, self.local_models, self.local_engine
                )
            else:
                provider = self._specs[config.kind].factory(
                    config, source.value if source else None
                )
            self._instances[key] = provider
            self._instance_keys[key] = source.value if source else None
        return provider

    def use_credential(self, provider_id: str, auth_profile: str, value: str) -> None:
        """A fresh credential for a profile (a refreshed OAuth token): the next `get` builds
        the provider with it."""
        key = (provider_id, auth_profile)
        if key in self._instances and self._instance_keys.get(key) != value:
            self._retired.append(self._instances.pop(key))
            self._instance_keys.pop(key, None)

    def forget_credentials(self) -> None:
        """A key in the secret store changed: every provider is built again, with the key
        as it is now, on its next use."""
        self._retired.extend(self._instances.values())
        self._instances.clear()
        self._instance_keys.clear()

    async def close(self) -> None:
        """Close every provider built so far (they can be built again afterwards)."""
        instances, self._instances = [*self._instances.values(), *self._retired], {}
        self._retired = []
        self._instance_keys.clear()
        for provider in instances:
            try:
                await provider.close()
            except Exception:  # one provider failing to close must not keep others open
                _LOGGER.exception("closing provider %s failed", provider.id)


# ---------------------------------------------------------------------------- catalogue


@dataclass
class _Discovery:
    models: list[ModelInfo] | None = None
    """The last list the provider answered (kept when a later refresh fails)."""
    fetched_at: float | None = None
    error: str = ""
    task: asyncio.Task[None] | None = None


def _known_info(config: ProviderConfig, known: KnownModel) -> ModelInfo:
    return ModelInfo(
        id=known.id,
        provider=config.id,
        name=known.name or known.id,
        context_window=known.context_window,
        max_output_tokens=known.max_output_tokens,
        reasoning=known.reasoning,
        vision=known.vision,
        source="builtin",
    )


def _configured_info(config: ProviderConfig, model: str) -> ModelInfo:
    known = config.known_model(model)
    if known is not None:
        return replace(_known_info(config, known), id=model, source="config")
    return ModelInfo(
        id=model,
        provider=config.id,
        name=model,
        context_window=config.capabilities.default_context_window,
        source="config",
    )


def _catalog_info(entry: ModelEntry, base: ModelInfo | None) -> ModelInfo:
    info = base or ModelInfo(id=entry.id, provider=entry.provider)
    return replace(
        info,
        name=entry.name or info.name or entry.id,
        context_window=entry.context_window or info.context_window,
        reasoning=entry.reasoning or info.reasoning,
        vision="image" in entry.input or info.vision,
        source="config",
    )


def catalog_entry(info: ModelInfo) -> dict[str, Any]:
    """A `models.list` entry (OpenClaw's shape)."""
    entry: dict[str, Any] = {
        "id": info.id,
        "name": info.name or info.id,
        "provider": info.provider,
        "input": ["text", "image"] if info.vision else ["text"],
        "reasoning": info.reasoning,
    }
    if info.context_window:
        entry["contextWindow"] = info.context_window
    return entry


class ModelCatalog:
    """Every model the configured providers offer, and `provider/model` resolution."""

    def __init__(
        self,
        registry: ProviderRegistry,
        *,
        ttl_s: float = 3600.0,
        retry_s: float = 60.0,
        timeout_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._state: dict[str, _Discovery] = {}

    @property
    def errors(self) -> dict[str, str]:
        """The last discovery error per provider (cleared by a successful refresh)."""
        return {pid: s.error for pid, s in self._state.items() if s.error}

    def _discoverable(self) -> list[str]:
        return [pid for pid, c in self.registry.configs.items() if c.settings.discover_models]

    def _stale(self, pid: str) -> bool:
        state = self._state.get(pid)
        if state is None or state.fetched_at is None:
            return True
        age = self._clock() - state.fetched_at
        return age >= (self._retry_s if state.error else self._ttl_s)

    # ------------------------------------------------------------------ discovery

    async def _discover(self, pid: str) -> None:
        state = self._state.setdefault(pid, _Discovery())
        previous = state.error
        try:
            provider = self.registry.get(pid)
            async with asyncio.timeout(self._timeout_s):
                models = await provider.list_models()
        except ProviderError as exc:
            state.error = exc.message
        except TimeoutError:
            state.error = f"{pid} did not list its models within {self._timeout_s:g} s"
        except Exception as exc:  # a background task: nobody else would see it
            _LOGGER.exception("listing the models of %s failed", pid)
            state.error = f"listing the models of {pid} failed: {exc}"
        else:
            state.models, state.error = models, ""
        finally:
            state.fetched_at = self._clock()
        if state.error and state.error != previous:  # once per distinct failure
            _LOGGER.warning("model list of %s: %s", pid, state.error)

    def _start(self, pid: str) -> asyncio.Task[None]:
        state = self._state.setdefault(pid, _Discovery())
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._discover(pid), name=f"models:{pid}")
        return state.task

    async def refresh(self, provider_id: str | None = None, *, force: bool = False) -> None:
        """Ask the providers (all, or one) whose list is stale (or every one, `force`)."""
        ids = [provider_id] if provider_id else self._discoverable()
        tasks = [self._start(pid) for pid in ids if force or self._stale(pid)]
        if tasks:
            # Shielded: a caller giving up must not cancel a refresh others wait for.
            await asyncio.shield(asyncio.gather(*tasks))

    def refresh_in_background(self) -> None:
        """Start refreshing the stale lists without waiting (needs a running loop)."""
        for pid in self._discoverable():
            if self._stale(pid):
                self._start(pid)

    async def available(self, *, refresh: bool = False) -> list[ModelInfo]:
        """The catalogue, after asking the providers whose list is stale."""
        await self.refresh(force=refresh)
        return self._merged()

    def models(self) -> list[ModelInfo]:
        """The catalogue as known now; stale lists are refreshed in the background."""
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
            asyncio.get_running_loop()
            self.refresh_in_background()
        return self._merged()

    async def close(self) -> None:
        tasks = [s.task for s in self._state.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ merging

    def _provider_models(self, config: ProviderConfig) -> dict[str, ModelInfo]:
        state = self._state.get(config.id)
        discovered = state.models if state is not None else None
        out: dict[str, ModelInfo] = {}
        if discovered is None and config.preset.local and config.settings.discover_models:
            # A local server (Ollama, LM Studio) offers what it has pulled, maybe nothing,
            # maybe is not even running: list nothing until it answers.
            pass
        elif discovered is None or not config.settings.discover_models:
            for known in config.preset.models:
                out[known.id] = _known_info(config, known)
        else:
            for found in discovered:
                match = config.known_model(found.id)
                if match is not None and found.context_window is None:
                    out[found.id] = replace(found, context_window=match.context_window)
                else:
                    out[found.id] = found
        for model in config.settings.models:
            out.setdefault(model, _configured_info(config, model))
        return out

    def _merged(self) -> list[ModelInfo]:
        merged: dict[tuple[str, str], ModelInfo] = {}
        for config in self.registry.configs.values():
            for info in self._provider_models(config).values():
                merged[(info.provider, info.id)] = info
        for entry in self.registry.settings.models.catalog:
            if entry.provider in self.registry.configs:
                key = (entry.provider, entry.id)
                merged[key] = _catalog_info(entry, merged.get(key))
        return list(merged.values())

    def entries(self) -> list[dict[str, Any]]:
        """The catalogue as `models.list` entries."""
        return [catalog_entry(info) for info in self.models()]

    # ------------------------------------------------------------------ resolution

    def resolve(self, ref: str, *, auth_profile: str = "") -> tuple[Provider, ModelInfo]:
        """The provider and model for `provider/model` or a bare model id. Raises
        `ProviderError` (kind `not_found`) saying what to do."""
        info = self.resolve_model(ref)
        return self.registry.get(info.provider, auth_profile=auth_profile), info

    def resolve_model(self, ref: str) -> ModelInfo:
        """The `ModelInfo` for `provider/model` or a bare model id."""
        merged = self._merged()
        pid, slash, model = ref.partition("/")
        if slash and pid in self.registry.configs:
            config = self.registry.configs[pid]
            for info in merged:
                if info.provider == pid and info.id == model:
                    return info
            known = config.known_model(model)
            if known is not None:
                return replace(_known_info(config, known), id=model)
            state = self._state.get(pid)
            if (
                state is None
                or state.models is None
                or not config.settings.discover_models
                or config.kind == "local"  # the provider says what is installed or missing
            ):
                # Nothing to check against (no list yet): let the provider judge the id.
                return _configured_info(config, model)
            raise ProviderError(
                pid,
                "not_found",
                f"unknown model {ref}: run `moltis models` to see the available ones (or add "
                f"it to providers.{pid}.models)",
            )
        # A bare id (which may itself contain a slash, e.g. `openai/gpt-oss-120b`).
        order = sorted(merged, key=lambda i: i.provider != self.registry.default_provider)
        for info in order:
            if info.id == ref:
                return info
        if slash and pid not in self.registry.configs:
            hint = (
                f"provider {pid} is not enabled (add [providers.{pid}] to the config)"
                if pid in PRESETS
                else "run `moltis models` to see the available ones"
            )
            raise ProviderError(pid, "not_found", f"unknown model {ref}: {hint}")
        raise ProviderError(
            "", "not_found", f"unknown model {ref}: run `moltis models` to see the available ones"
        )
