"""Known providers: the wire API, base URL, key variable, capabilities and models each preset
brings, so a `[providers.<id>]` table can stay (nearly) empty."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from moltis_desktop.providers.base import ProviderCapabilities

Kind = Literal["anthropic", "openai", "local"]
NO_KEY = "no-key-needed"
"""Sent to servers that need no key: both SDKs refuse to build a request without one."""


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
            base_url_env="OLLAMA_BASE_URL",
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
            base_url_env="LMSTUDIO_BASE_URL",
            key_required=False,
            local=True,
            capabilities=_LOCAL_CAPS,
            # Whatever model is loaded: discovery finds it.
        ),
        Preset(
            "local",
            "local",
            "",
            label="Local model (built in)",
            key_required=False,
            local=True,
            capabilities=_caps(4096, vision=False),
            # The catalog id comes from models.local.model or what is installed
            # (`LocalProvider.default_model`); `moltis models local list` shows them.
        ),
    )
}
