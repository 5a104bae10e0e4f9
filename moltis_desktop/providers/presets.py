"""Known providers (wire API, base URL, key variable, models) and the resolved per-provider
config both SDK-based providers share, with the errors that tell a user what to do."""

from __future__ import annotations

import fnmatch
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from moltis_desktop.config.settings import ProviderSettings
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.providers.base import ErrorKind, ProviderCapabilities, ProviderError

_LOGGER = logging.getLogger(__name__)

Kind = Literal["anthropic", "openai"]
INVALID_ARGUMENTS = "_invalid_arguments"
"""Key of the arguments of a tool call whose JSON could not be read (holds the raw text)."""
NO_KEY = "no-key-needed"
"""Sent to servers that need no key: both SDKs refuse to build a request without one."""


class ProviderConfigError(MoltisError):
    """A `[providers.<id>]` table cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class KnownModel:
    """A model a preset knows about (listed when discovery is off or fails)."""

    id: str
    context_window: int
    name: str = ""
    reasoning: bool = False
    vision: bool = False
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Preset:
    """What a known provider id brings, so its config table can stay (nearly) empty."""

    id: str
    kind: Kind
    base_url: str
    label: str = ""
    api_key_env: str = ""
    """Environment variable holding the key; empty when the server takes none."""
    base_url_env: str = ""
    """Environment variable overriding the base URL (the SDKs' own convention)."""
    key_required: bool = True
    local: bool = False
    """Runs on this machine (no key, no cost, maybe not started)."""
    capabilities: ProviderCapabilities = field(default_factory=ProviderCapabilities)
    models: tuple[KnownModel, ...] = ()
    default_model: str = ""
    reasoning_models: tuple[str, ...] = ()
    """Glob patterns of the models that accept `reasoning_effort` (OpenAI wire only)."""
    reasoning_efforts: tuple[str, ...] = ("low", "medium", "high")
    """The `reasoning_effort` values the server accepts."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """OpenAI's own API wants `max_completion_tokens` (reasoning models refuse
    `max_tokens`); most compatible servers only know `max_tokens`."""
    stream_usage: bool = True
    """Ask for the usage chunk (`stream_options.include_usage`)."""


def _caps(
    window: int, *, vision: bool = True, thinking: bool = False, caching: bool = False
) -> ProviderCapabilities:
    return ProviderCapabilities(
        vision=vision, thinking=thinking, prompt_caching=caching, default_context_window=window
    )


def _claude(model: str, name: str, max_output: int) -> KnownModel:
    return KnownModel(
        model, 200_000, name, reasoning=True, vision=True, max_output_tokens=max_output
    )


_LOCAL_CAPS = _caps(32_768, vision=False)

PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset(
            "anthropic",
            "anthropic",
            "https://api.anthropic.com",
            label="Anthropic",
            api_key_env="ANTHROPIC_API_KEY",
            base_url_env="ANTHROPIC_BASE_URL",
            capabilities=_caps(200_000, thinking=True, caching=True),
            models=(
                _claude("claude-opus-4-6", "Claude Opus 4.6", 128_000),
                _claude("claude-sonnet-4-6", "Claude Sonnet 4.6", 64_000),
                _claude("claude-opus-4-5", "Claude Opus 4.5", 64_000),
                _claude("claude-sonnet-4-5", "Claude Sonnet 4.5", 64_000),
                _claude("claude-haiku-4-5", "Claude Haiku 4.5", 64_000),
                _claude("claude-opus-4-1", "Claude Opus 4.1", 32_000),
            ),
            # claude-sonnet-4-5 is deprecated by the SDK (end of life 2026-11-30).
            default_model="claude-sonnet-4-6",
        ),
        Preset(
            "openai",
            "openai",
            "https://api.openai.com/v1",
            label="OpenAI",
            api_key_env="OPENAI_API_KEY",
            base_url_env="OPENAI_BASE_URL",
            capabilities=_caps(128_000, thinking=True, caching=True),
            models=(
                KnownModel("gpt-4.1", 1_047_576, "GPT-4.1", vision=True),
                KnownModel("gpt-4.1-mini", 1_047_576, "GPT-4.1 mini", vision=True),
                KnownModel("gpt-4o", 128_000, "GPT-4o", vision=True),
                KnownModel("gpt-4o-mini", 128_000, "GPT-4o mini", vision=True),
                KnownModel("gpt-5", 400_000, "GPT-5", reasoning=True, vision=True),
                KnownModel("gpt-5-mini", 400_000, "GPT-5 mini", reasoning=True, vision=True),
                KnownModel("o3", 200_000, "o3", reasoning=True, vision=True),
                KnownModel("o3-mini", 200_000, "o3-mini", reasoning=True),
                KnownModel("o4-mini", 200_000, "o4-mini", reasoning=True, vision=True),
            ),
            default_model="gpt-4.1",
            reasoning_models=("o1*", "o3*", "o4*", "gpt-5*"),
            max_tokens_field="max_completion_tokens",
        ),
        Preset(
            "gemini",
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            label="Google Gemini",
            api_key_env="GEMINI_API_KEY",
            capabilities=_caps(1_048_576, thinking=True),
            models=(
                KnownModel(
                    "gemini-2.5-pro", 1_048_576, "Gemini 2.5 Pro", reasoning=True, vision=True
                ),
                KnownModel(
                    "gemini-2.5-flash", 1_048_576, "Gemini 2.5 Flash", reasoning=True, vision=True
                ),
                KnownModel("gemini-2.0-flash", 1_048_576, "Gemini 2.0 Flash", vision=True),
            ),
            default_model="gemini-2.5-flash",
            reasoning_models=("gemini-2.5-*", "gemini-3*"),
        ),
        Preset(
            "groq",
            "openai",
            "https://api.groq.com/openai/v1",
            label="Groq",
            api_key_env="GROQ_API_KEY",
            capabilities=_caps(131_072, vision=False, thinking=True),
            models=(
                KnownModel("llama-3.3-70b-versatile", 131_072, "Llama 3.3 70B"),
                KnownModel("llama-3.1-8b-instant", 131_072, "Llama 3.1 8B"),
                KnownModel("openai/gpt-oss-120b", 131_072, "GPT-OSS 120B", reasoning=True),
            ),
            default_model="llama-3.3-70b-versatile",
            reasoning_models=("openai/gpt-oss*",),
        ),
        Preset(
            "xai",
            "openai",
            "https://api.x.ai/v1",
            label="xAI",
            api_key_env="XAI_API_KEY",
            capabilities=_caps(256_000, thinking=True),
            models=(
                KnownModel("grok-4", 256_000, "Grok 4", reasoning=True, vision=True),
                KnownModel("grok-3", 131_072, "Grok 3"),
                KnownModel("grok-3-mini", 131_072, "Grok 3 mini", reasoning=True),
            ),
            default_model="grok-4",
            # grok-4 reasons on its own and refuses the parameter.
            reasoning_models=("grok-3-mini*",),
            reasoning_efforts=("low", "high"),
        ),
        Preset(
            "deepseek",
            "openai",
            "https://api.deepseek.com/v1",
            label="DeepSeek",
            api_key_env="DEEPSEEK_API_KEY",
            capabilities=_caps(128_000, vision=False, thinking=True, caching=True),
            models=(
                KnownModel("deepseek-chat", 128_000, "DeepSeek Chat"),
                KnownModel("deepseek-reasoner", 128_000, "DeepSeek Reasoner", reasoning=True),
            ),
            default_model="deepseek-chat",
        ),
        Preset(
            "openrouter",
            "openai",
            "https://openrouter.ai/api/v1",
            label="OpenRouter",
            api_key_env="OPENROUTER_API_KEY",
            capabilities=_caps(128_000),
            models=(
                KnownModel(
                    "anthropic/claude-sonnet-4.5", 200_000, "Claude Sonnet 4.5", vision=True
                ),
                KnownModel("openai/gpt-4o", 128_000, "GPT-4o", vision=True),
            ),
            default_model="anthropic/claude-sonnet-4.5",
        ),
        Preset(
            "mistral",
            "openai",
            "https://api.mistral.ai/v1",
            label="Mistral",
            api_key_env="MISTRAL_API_KEY",
            capabilities=_caps(128_000),
            models=(
                KnownModel("mistral-large-latest", 128_000, "Mistral Large", vision=True),
                KnownModel("mistral-small-latest", 128_000, "Mistral Small", vision=True),
                KnownModel("codestral-latest", 256_000, "Codestral", vision=False),
            ),
            default_model="mistral-large-latest",
            # Mistral refuses unknown parameters; it sends the usage in the last chunk anyway.
            stream_usage=False,
        ),
        Preset(
            "ollama",
            "openai",
            "http://127.0.0.1:11434/v1",
            label="Ollama",
            key_required=False,
            local=True,
            capabilities=_LOCAL_CAPS,
            models=(
                KnownModel("llama3.2", 131_072, "Llama 3.2"),
                KnownModel("qwen3", 40_960, "Qwen 3", reasoning=True),
            ),
            default_model="llama3.2",
        ),
        Preset(
            "lmstudio",
            "openai",
            "http://127.0.0.1:1234/v1",
            label="LM Studio",
            key_required=False,
            local=True,
            capabilities=_LOCAL_CAPS,
            # Whatever model is loaded: discovery finds it.
        ),
    )
}


# ---------------------------------------------------------------------------- resolved config


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


# ---------------------------------------------------------------------------- errors

_OVERFLOW_MARKERS = (
    "prompt is too long",
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "input is too long",
)


def missing_key_error(config: ProviderConfig) -> ProviderError:
    return ProviderError(config.id, "auth", f"no API key for {config.id}: {config.key_hint}")


def status_error(
    config: ProviderConfig,
    status: int | None,
    detail: str,
    *,
    model: str = "",
    error_type: str = "",
    code: str = "",
    retry_after_s: float | None = None,
    listing: bool = False,
) -> ProviderError:
    """The error for an HTTP status, or for an error event inside a stream (status None,
    classified by its `error_type`/`code`; unknown ones count as server errors)."""
    pid, retries = config.id, config.max_retries
    after = f" after {retries} retries" if retries else ""
    kind: ErrorKind
    lowered = f"{detail} {error_type} {code}".lower()
    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        kind = "auth"
        if status == 403 or error_type == "permission_error":
            message = f"{pid} refused access (403): {detail}; check the key's permissions"
        else:
            message = (
                f"{pid} rejected the API key (401): check `moltis secrets get "
                f"{config.api_key_secret}`"
            )
    elif status == 404 or error_type == "not_found_error":
        kind = "not_found"
        if listing:
            message = (
                f"{pid} has no model list at {config.base_url} (404): check "
                f"providers.{pid}.base_url, or set providers.{pid}.discover_models = false"
            )
        else:
            message = (
                f"{pid} does not know model {model!r} (404): run `moltis models` to see the "
                "available ones"
            )
    elif status == 413 or (
        status in (None, 400, 422) and any(m in lowered for m in _OVERFLOW_MARKERS)
    ):
        kind = "context_overflow"
        message = (
            f"the conversation is too long for {pid}/{model} ({detail}): compact it with "
            "/compact or start over with /new"
        )
    elif status == 429 or "rate_limit" in f"{error_type} {code}":
        kind = "rate_limit"
        message = (
            f"{pid} is rate limiting requests (429){after}: wait a moment and try again, or "
            "configure a fallback model"
        )
    elif status == 408 or error_type == "timeout_error":
        kind = "timeout"
        message = f"{pid} timed out the request{after}: try again"
    elif status is None or status >= 500:
        kind = "server"
        shown = status if status is not None else error_type or "stream error"
        message = (
            f"{pid} failed with a server error ({shown}){after}: {detail}. Try again later, or "
            "configure a fallback model"
        )
    else:
        kind = "bad_request"
        message = f"{pid} rejected the request ({status}): {detail}"
    return ProviderError(pid, kind, message, status=status, retry_after_s=retry_after_s)


def connection_error(config: ProviderConfig, reason: str, *, timed_out: bool) -> ProviderError:
    pid = config.id
    if timed_out:
        return ProviderError(
            pid,
            "timeout",
            f"{pid} did not answer within {config.timeout_s:g} s: try again, or raise "
            f"providers.{pid}.timeout_s",
        )
    where = f"cannot reach {pid} at {config.base_url}"
    if config.preset.local:
        advice = f"is {config.preset.label or pid} running on this machine?"
    else:
        advice = f"check the network and providers.{pid}.base_url"
    return ProviderError(pid, "unreachable", f"{where} ({reason}): {advice}")


def transport_errors() -> tuple[type[Exception], type[Exception]]:
    """`(TimeoutException, HTTPError)` of the HTTP library the SDKs use (loaded with them):
    errors while reading a stream can escape the SDKs unwrapped."""
    http = sys.modules.get("httpx2") or sys.modules.get("httpx")
    if http is None:  # no SDK loaded yet, so nothing of theirs can be raised
        return (_NeverRaisedError, _NeverRaisedError)
    return (http.TimeoutException, http.HTTPError)


class _NeverRaisedError(Exception):
    pass


def stream_transport_error(config: ProviderConfig, exc: Exception, *, model: str) -> ProviderError:
    """The error for a connection that failed while an answer was streaming (one of
    `transport_errors()`)."""
    if isinstance(exc, transport_errors()[0]):
        return connection_error(config, "timed out", timed_out=True)
    return status_error(config, None, f"the connection dropped mid-answer ({exc!r})", model=model)


def error_details(body: object, fallback: str) -> tuple[str, str, str]:
    """`(type, code, message)` from an API error body (`{"error": {...}}` or the inner
    object, as the SDKs hand it over)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            message = inner.get("message") or fallback
            return str(inner.get("type") or ""), str(inner.get("code") or ""), str(message)
        if isinstance(inner, str):
            return "", "", inner
    return "", "", fallback


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a `retry-after` header (seconds form only)."""
    if not headers:
        return None
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


def parse_tool_arguments(provider_id: str, name: str, raw: str) -> dict[str, Any]:
    """A tool call's JSON arguments. Text that is not a JSON object (a model cut off by
    max_tokens, a small local model) is handed on as `{"_invalid_arguments": raw}`, so the
    tool's validation tells the model what went wrong instead of the turn failing."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    _LOGGER.warning("%s sent arguments for tool %s that are not a JSON object", provider_id, name)
    return {INVALID_ARGUMENTS: raw}
