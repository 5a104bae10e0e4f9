"""The providers and the model catalogue in effect, as one holder.

A config change that touches providers, auth profiles or models replaces the registry and
the catalogue together (`reconfigure`); whatever a reply is still streaming through keeps
working, because the replaced ones are closed only at `close`. The holder also keeps OAuth
credentials fresh: before a turn of an agent signed in with OAuth, `ensure_credentials`
refreshes its access token when it is about to expire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import Settings
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.providers.base import ModelInfo, Provider, ProviderSpec
from moltis_desktop.providers.local import LocalEngine
from moltis_desktop.providers.registry import ModelCatalog, ProviderRegistry

if TYPE_CHECKING:
    from moltis_desktop.providers.local_catalog import LocalModelManager
    from moltis_desktop.providers.oauth import AuthManager

_LOGGER = logging.getLogger(__name__)

_MODEL_INPUTS = ("providers", "auth_profiles", "models")


class Models:
    """The provider registry and the model catalogue in use, swapped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        specs: Iterable[ProviderSpec] | None = None,
        secrets: SecretStore | None = None,
        env: Mapping[str, str] | None = None,
        state_dir: Path | None = None,
        local_models: LocalModelManager | None = None,
        probe_local_servers: bool = True,
    ) -> None:
        """`local_models`: the local model manager (`providers.local_catalog`); the embedded
        model's engine is kept here, across config reloads, so it is loaded at most once."""
        self._specs = list(specs) if specs is not None else None
        self.local_models = local_models
        self.local_engine = LocalEngine(settings.models.local)
        self._probe = probe_local_servers
        self._secrets = secrets
        self._env = env
        self._state_dir = state_dir
        self._settings = settings
        self.registry, self.catalog = self._build(settings)
        self._retired: list[ModelCatalog] = []
        self._auth: AuthManager | None = None

    def _build(self, settings: Settings) -> tuple[ProviderRegistry, ModelCatalog]:
        registry = ProviderRegistry(
            settings,
            specs=self._specs,
            secrets=self._secrets,
            env=self._env,
            local_models=self.local_models,
            local_engine=self.local_engine,
            probe_local_servers=self._probe,
        )
        return registry, ModelCatalog(registry)

    # ------------------------------------------------------------------ what turns use

    def resolve(self, ref: str, *, auth_profile: str = "") -> tuple[Provider, ModelInfo]:
        """The provider and model for `provider/model` (see `ModelCatalog.resolve`)."""
        return self.catalog.resolve(ref, auth_profile=auth_profile)

    def default_model(self) -> str:
        """`agents.model`, else the first provider's default model."""
        return self.registry.default_model()

    async def ensure_credentials(self, auth_profile: str) -> None:
        """Before a turn with `auth_profile`: when it is an OAuth profile, refresh its access
        token if it is about to expire, and have the provider use the fresh one."""
        profile = self._settings.auth_profiles.get(auth_profile)
        if profile is None or profile.kind != "oauth":
            return
        if self._auth is None:
            from moltis_desktop.providers.oauth import AuthManager

            if self._secrets is None:
                raise MoltisError(
                    f"the auth profile {auth_profile!r} signs in with OAuth, which needs the "
                    "secret store"
                )
            self._auth = AuthManager(
                self._secrets,
                self._settings.auth_profiles,
                state_dir=self._state_dir,
                env=self._env,
            )
        token = await self._auth.access_token(auth_profile)
        self.registry.use_credential(profile.provider, auth_profile, token)

    # ------------------------------------------------------------------ config changes

    def reconfigure(self, settings: Settings) -> bool:
        """Apply new settings; the registry and catalogue are rebuilt when what they are
        made of changed (returns whether they were)."""
        old, self._settings = self._settings, settings
        if self._auth is not None:
            self._auth.update_profiles(settings.auth_profiles)
        if (
            all(getattr(old, name) == getattr(settings, name) for name in _MODEL_INPUTS)
            and old.agents.model == settings.agents.model
        ):
            return False
        self._retired.append(self.catalog)
        self.registry, self.catalog = self._build(settings)
        _LOGGER.info("providers reconfigured: %s", ", ".join(self.registry.configs) or "none")
        return True

    def rediscover(self) -> bool:
        """With no `[providers]`, look again for what is there (a key stored since, an
        Ollama or LM Studio started since): the registry and catalogue are rebuilt. Called
        before the turn after one that found nothing set up; returns whether it rebuilt."""
        if self._settings.providers:
            return False
        self._retired.append(self.catalog)
        self.registry, self.catalog = self._build(self._settings)
        _LOGGER.info("providers looked for again: %s", ", ".join(self.registry.configs))
        return True

    async def close(self) -> None:
        """Close the catalogues and providers, the replaced ones included."""
        catalogs, self._retired = [*self._retired, self.catalog], []
        for catalog in catalogs:
            await catalog.close()
            await catalog.registry.close()
        await self.local_engine.close()
