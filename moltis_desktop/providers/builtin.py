"""The built-in providers plugin: the `anthropic` and `openai` wire kinds, registered through
the same hook as third-party providers. The SDK-based modules load only when a provider of
that kind is built (and the SDKs themselves only when it is first called)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moltis_desktop.core.hooks import hookimpl
from moltis_desktop.providers.base import Provider, ProviderSpec
from moltis_desktop.providers.resolved import ProviderConfig


def _anthropic(config: ProviderConfig, api_key: str | None) -> Provider:
    from moltis_desktop.providers.anthropic import AnthropicProvider

    return AnthropicProvider(config, api_key)


def _openai(config: ProviderConfig, api_key: str | None) -> Provider:
    from moltis_desktop.providers.openai_compat import OpenAIProvider

    return OpenAIProvider(config, api_key)


SPECS = (
    ProviderSpec("anthropic", _anthropic, "Anthropic Messages API (official SDK)"),
    ProviderSpec(
        "openai", _openai, "OpenAI Chat Completions and compatible servers (official SDK)"
    ),
)


@hookimpl
def register_providers(register: Callable[[Any], None]) -> None:
    for spec in SPECS:
        register(spec)
