"""First-run set-up, shared by `moltis onboard` and the tray app's dialog: choose a
provider (a local Ollama first, when one answers), put its key in the secret store, test it
with a real request, pick a model and name the assistant.

Nothing here writes a key anywhere but the secret store: the config file gets the
provider's table, the model and the name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from moltis_desktop.config.loader import parse_text
from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import ProviderSettings, Settings
from moltis_desktop.config.store import ConfigStore, text_hash
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.providers.presets import PRESETS

OLLAMA_URL = "http://127.0.0.1:11434"
_KEY_ENV = "MOLTIS_ONBOARD_KEY"
_ORDER = ("anthropic", "openai", "openrouter", "gemini", "groq", "mistral", "deepseek", "xai")


class OnboardingError(MoltisError):
    """The set-up cannot go on as asked; the message says what to change."""


@dataclass(frozen=True)
class Choice:
    """A provider the user can pick."""

    id: str
    label: str
    needs_key: bool
    local: bool = False
    models: tuple[str, ...] = ()
    """Models known before asking (a local Ollama's installed models)."""
    default_model: str = ""


@dataclass
class Plan:
    """What the user chose."""

    provider: str
    key: str = ""
    base_url: str = ""
    model: str = ""
    assistant_name: str = ""
    models: list[str] = field(default_factory=list)
    """The provider's models, from the connection test."""


async def detect_ollama(base_url: str = OLLAMA_URL, timeout_s: float = 0.8) -> list[str] | None:
    """The models of an Ollama server answering at `base_url`, or None when none does."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(f"{base_url.rstrip('/')}/api/tags") as resp,
        ):
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return [str(m.get("name") or m.get("model")) for m in body.get("models") or []]


async def choices(ollama_url: str = OLLAMA_URL) -> list[Choice]:
    """The providers to offer, a running Ollama first."""
    out: list[Choice] = []
    ollama = await detect_ollama(ollama_url)
    if ollama is not None:
        out.append(
            Choice("ollama", "Ollama (running on this computer)", False, True, tuple(ollama))
        )
    for pid in _ORDER:
        preset = PRESETS.get(pid)
        if preset is not None:
            out.append(Choice(pid, preset.label or pid, preset.key_required, preset.local, (), ""))
    return out


def _settings_for(plan: Plan) -> tuple[Settings, dict[str, str]]:
    provider = ProviderSettings(
        base_url=plan.base_url,
        api_key_env=_KEY_ENV if plan.key else "",
        max_retries=0,
        timeout_s=20.0,
    )
    return Settings(providers={plan.provider: provider}), ({_KEY_ENV: plan.key} if plan.key else {})


async def check_connection(plan: Plan) -> list[str]:
    """Ask the provider for its models with the given key (a real request); fills and
    returns `plan.models`. Raises OnboardingError with the provider's answer."""
    from moltis_desktop.providers.registry import ProviderRegistry

    preset = PRESETS.get(plan.provider)
    if preset is not None and preset.key_required and not plan.key:
        raise OnboardingError(f"{preset.label or plan.provider} needs an API key: paste it")
    settings, env = _settings_for(plan)
    registry = ProviderRegistry(settings, env=env)
    if plan.provider not in registry.configs:
        raise OnboardingError(
            registry.errors.get(plan.provider, f"unknown provider {plan.provider}")
        )
    try:
        async with asyncio.timeout(25):
            models = await registry.get(plan.provider).list_models()
    except MoltisError as exc:
        raise OnboardingError(f"the connection test failed: {exc.message}") from None
    except TimeoutError:
        raise OnboardingError("the provider did not answer within 25 s") from None
    finally:
        await registry.close()
    plan.models = sorted(m.id for m in models)
    if not plan.models:
        raise OnboardingError("the provider answered but offers no models")
    if not plan.model:
        default = preset.default_model if preset else ""
        plan.model = default if default in plan.models else plan.models[0]
    return plan.models


def key_secret_name(provider: str) -> str:
    return f"{provider}-api-key"


def apply(plan: Plan, store: ConfigStore, secrets: SecretStore | None) -> None:
    """Save the choice: the key into the secret store, the rest into the config file."""
    if plan.key:
        if secrets is None:
            raise OnboardingError("no secret store is available to keep the key")
        secrets.set(key_secret_name(plan.provider), plan.key)
    raw = store.path.read_text(encoding="utf-8") if store.path.exists() else ""
    current: dict[str, Any] = parse_text(raw, store.format, store.path) if raw.strip() else {}
    table: dict[str, Any] = {"enabled": True}
    if plan.base_url:
        table["base_url"] = plan.base_url
    patch: dict[str, Any] = {"providers": {plan.provider: table}}
    agents: dict[str, Any] = {}
    if plan.model:
        agents["model"] = f"{plan.provider}/{plan.model}"
    if plan.assistant_name:
        listed = list((current.get("agents") or {}).get("list") or [{"id": "main"}])
        default = (current.get("agents") or {}).get("default", "main")
        if not any(a.get("id") == default for a in listed):
            listed.insert(0, {"id": default})
        agents["list"] = [
            {**a, "name": plan.assistant_name} if a.get("id") == default else a for a in listed
        ]
    if agents:
        patch["agents"] = agents
    store.patch(patch, text_hash(raw) if store.path.exists() else None)


def needs_onboarding(settings: Settings, secrets: SecretStore | None, env: dict[str, str]) -> bool:
    """Nothing is set up yet: no provider in the config and no key anywhere."""
    if settings.providers:
        return False
    for pid, preset in PRESETS.items():
        if preset.api_key_env and env.get(preset.api_key_env):
            return False
        if secrets is not None:
            try:
                if key_secret_name(pid) in secrets.names():
                    return False
            except MoltisError:
                return True
    return True
