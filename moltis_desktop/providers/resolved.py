"""The resolved config of one provider: its `[providers.<id>]` settings over its preset, with
every name (base URL, key secret, key variable) resolved."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from moltis_desktop.config.settings import ProviderSettings
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.providers.base import ProviderCapabilities
from moltis_desktop.providers.presets import PRESETS, Kind, KnownModel, Preset


class ProviderConfigError(MoltisError):
    """A `[providers.<id>]` table cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class ProviderConfig:
    """One configured provider: its settings over its preset, with every name resolved."""

    id: str
    kind: Kind
    base_url: str
    preset: Preset
    """The known preset, or one made for a custom provider id."""
    settings: ProviderSettings = field(default_factory=ProviderSettings)
    api_key_secret: str = ""
    """Secret-store entry that may hold the key."""
    api_key_env: str = ""
    """Environment variable that may hold the key (empty: none)."""

    @property
    def key_required(self) -> bool:
        return self.preset.key_required

    @property
    def capabilities(self) -> ProviderCapabilities:
        return self.preset.capabilities

    @property
    def timeout_s(self) -> float:
        return self.settings.timeout_s

    @property
    def max_retries(self) -> int:
        return self.settings.max_retries

    def known_model(self, model: str) -> KnownModel | None:
        """The preset's entry for `model`, also for dated ids (`claude-sonnet-4-5-20250929`)."""
        best: KnownModel | None = None
        for known in self.preset.models:
            if model == known.id:
                return known
            if model.startswith(known.id + "-") and (best is None or len(known.id) > len(best.id)):
                best = known
        return best

    def takes_reasoning_effort(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, p) for p in self.preset.reasoning_models)

    @property
    def key_hint(self) -> str:
        """How to give this provider a key."""
        hint = f"run `moltis secrets set {self.api_key_secret}`"
        return f"{hint} or set {self.api_key_env}" if self.api_key_env else hint


def resolve_config(
    provider_id: str, settings: ProviderSettings | None = None, env: Mapping[str, str] | None = None
) -> ProviderConfig:
    """`[providers.<id>]` over the preset of that id (custom ids need `kind` + `base_url`)."""
    settings = settings or ProviderSettings()
    env = env or {}
    preset = PRESETS.get(provider_id)
    if preset is None:
        if not settings.kind or not settings.base_url:
            known = ", ".join(PRESETS)
            raise ProviderConfigError(
                f"unknown provider {provider_id!r}: use one of {known}, or set "
                f"providers.{provider_id}.kind (anthropic or openai) and "
                f"providers.{provider_id}.base_url"
            )
        preset = Preset(
            provider_id,
            settings.kind,
            settings.base_url,
            label=provider_id,
            # A custom server needs a key only when the config says where one lives.
            key_required=bool(settings.api_key_env or settings.api_key_secret),
        )
    base_url = settings.base_url
    if not base_url and preset.base_url_env:
        base_url = env.get(preset.base_url_env, "")
    return ProviderConfig(
        id=provider_id,
        kind=settings.kind or preset.kind,
        base_url=(base_url or preset.base_url),
        preset=preset,
        settings=settings,
        api_key_secret=settings.api_key_secret or f"{provider_id}-api-key",
        api_key_env=settings.api_key_env or preset.api_key_env,
    )
