"""Configured providers: presets, key resolution, the auto-default, the model catalogue
(discovery, cache, failures, resolution), prices, the plugin hook, and light imports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import (
    AgentsSettings,
    AuthProfileSettings,
    ModelEntry,
    ModelsSettings,
    PriceSettings,
    ProviderSettings,
    Settings,
)
from moltis_desktop.providers.base import (
    Completed,
    CompletionRequest,
    Message,
    ProviderError,
    TextPart,
    ToolResult,
    ToolSpec,
    Usage,
)
from moltis_desktop.providers.presets import NO_KEY, PRESETS
from moltis_desktop.providers.pricing import PriceTable, cost
from moltis_desktop.providers.registry import ModelCatalog, ProviderRegistry, catalog_entry
from moltis_desktop.providers.resolved import ProviderConfigError
from tests.support.fake_llm import FakeLLM, FakeModel, Turn
from tests.support.keyrings import MemoryKeyring
from tests.support.process import run_python

TIMEOUT_S = 15.0
PRESET_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai/",
    "groq": "https://api.groq.com/openai/v1",
    "xai": "https://api.x.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "mistral": "https://api.mistral.ai/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
}


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    async with FakeLLM() as one, FakeLLM() as two:
        yield one, two


async def say_hi(registry: ProviderRegistry, pid: str, *, auth_profile: str = "") -> str:
    provider = registry.get(pid, auth_profile=auth_profile)
    req = CompletionRequest("m", (Message("user", (TextPart("hi"),)),))
    async with asyncio.timeout(TIMEOUT_S):
        return "".join([getattr(e, "text", "") async for e in provider.stream(req)])


# ---------------------------------------------------------------------------- presets


async def test_every_preset_builds_a_client_on_its_base_url() -> None:
    assert set(PRESETS) - {"local"} == set(PRESET_URLS)  # local: no server, no SDK
    settings = Settings(providers={pid: ProviderSettings() for pid in PRESETS})
    env = {p.api_key_env: f"key-for-{p.id}" for p in PRESETS.values() if p.api_key_env}
    registry = ProviderRegistry(settings, env=env)
    try:
        assert registry.errors == {}
        for pid, url in PRESET_URLS.items():
            provider: Any = registry.get(pid)
            assert provider.base_url == url
            assert provider.config.kind == ("anthropic" if pid == "anthropic" else "openai")
            client = await provider.client()
            assert str(client.base_url).rstrip("/") == url.rstrip("/")
            assert client.api_key == env.get(PRESETS[pid].api_key_env, NO_KEY)
            assert client.max_retries == 2
    finally:
        await registry.close()


def test_base_url_environment_variables_and_custom_providers() -> None:
    settings = Settings(
        providers={
            "anthropic": ProviderSettings(),
            "openai": ProviderSettings(base_url="http://127.0.0.1:9/v1"),
            "work-llm": ProviderSettings(kind="openai", base_url="http://127.0.0.1:8/v1"),
            "mystery": ProviderSettings(),
            "off": ProviderSettings(enabled=False),
        }
    )
    env = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:7", "OPENAI_BASE_URL": "http://ignored"}
    registry = ProviderRegistry(settings, env=env)
    assert registry.configs["anthropic"].base_url == "http://127.0.0.1:7"
    assert registry.configs["openai"].base_url == "http://127.0.0.1:9/v1"  # config wins
    custom = registry.configs["work-llm"]
    assert (custom.kind, custom.base_url, custom.key_required) == (
        "openai",
        "http://127.0.0.1:8/v1",
        False,
    )
    assert custom.api_key_secret == "work-llm-api-key"
    assert list(registry.configs) == ["anthropic", "openai", "work-llm"]
    assert "providers.mystery.kind" in registry.errors["mystery"]
    with pytest.raises(ProviderConfigError, match="unusable"):
        registry.get("mystery")
    with pytest.raises(ProviderConfigError, match=r"add \[providers.groq\]"):
        registry.get("groq")


async def test_a_local_server_needs_no_key(fakes: tuple[FakeLLM, FakeLLM]) -> None:
    fake, _ = fakes
    settings = Settings(providers={"ollama": ProviderSettings(base_url=fake.openai_base_url)})
    registry = ProviderRegistry(settings, env={})
    try:
        assert await say_hi(registry, "ollama") == "ok"
    finally:
        await registry.close()
    assert fake.last("/v1/chat/completions").api_key == NO_KEY
    assert "max_tokens" in fake.last("/v1/chat/completions").body


async def test_ollama_tool_calls(fakes: tuple[FakeLLM, FakeLLM]) -> None:
    """Ollama streams each call whole, all at index 0, then says finish_reason "stop"."""
    fake, _ = fakes
    calls = [("current_time", {"timezone": "UTC"}), ("sessions_list", {"limit": 2})]
    fake.script(Turn(ollama_tools=True, tool_calls=calls), Turn(text="done"))
    settings = Settings(providers={"ollama": ProviderSettings(base_url=fake.openai_base_url)})
    registry = ProviderRegistry(settings, env={})
    tools = tuple(ToolSpec(name, name, {"type": "object", "properties": {}}) for name, _ in calls)
    history = [Message("user", (TextPart("time and sessions?"),))]
    try:
        provider = registry.get("ollama")
        async with asyncio.timeout(TIMEOUT_S):
            events = [
                e
                async for e in provider.stream(
                    CompletionRequest("llama3.2", tuple(history), tools=tools)
                )
            ]
            done = next(e for e in events if isinstance(e, Completed))
            assert done.stop_reason == "tool_use"
            got = done.message.tool_calls
            assert [(c.name, dict(c.arguments)) for c in got] == calls
            assert len({c.id for c in got}) == 2
            history += [
                done.message,
                Message("user", tuple(ToolResult(c.id, c.name, "r") for c in got)),
            ]
            events = [
                e
                async for e in provider.stream(
                    CompletionRequest("llama3.2", tuple(history), tools=tools)
                )
            ]
    finally:
        await registry.close()
    assert next(e for e in events if isinstance(e, Completed)).message.text == "done"
    sent = fake.last("/v1/chat/completions").body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in sent[2:]] == [c.id for c in got]


# ---------------------------------------------------------------------------- keys


def make_store(tmp_path: Path, backend: str) -> SecretStore:
    if backend == "keyring":
        return SecretStore(tmp_path, backend="keyring", prompt=None)
    env = {"MOLTIS_SECRETS_PASSPHRASE": "a passphrase for tests"}
    return SecretStore(tmp_path, backend="file", env=env, prompt=None)


@pytest.mark.parametrize("backend", ["keyring", "file"])
async def test_key_resolution_order(
    backend: str,
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
    fakes: tuple[FakeLLM, FakeLLM],
) -> None:
    fake, _ = fakes
    store = make_store(tmp_path, backend)
    settings = Settings(
        providers={"anthropic": ProviderSettings(base_url=fake.anthropic_base_url)},
        auth_profiles={"work": AuthProfileSettings(provider="anthropic")},
    )
    env = {"ANTHROPIC_API_KEY": "sk-from-env-1111"}

    async def key_sent(auth_profile: str = "") -> tuple[str, str]:
        registry = ProviderRegistry(settings, secrets=store, env=env)
        try:
            source = registry.resolve_key("anthropic", auth_profile)
            assert source is not None
            await say_hi(registry, "anthropic", auth_profile=auth_profile)
        finally:
            await registry.close()
        assert fake.last("/v1/messages").api_key == source.value
        return source.value, source.origin

    assert await key_sent() == ("sk-from-env-1111", "environment variable ANTHROPIC_API_KEY")
    store.set("anthropic-api-key", "sk-from-store-2222")
    assert await key_sent() == ("sk-from-store-2222", "secret anthropic-api-key")
    with pytest.raises(ProviderError, match=r"run `moltis secrets set auth-work`"):
        await key_sent("work")
    store.set("auth-work", "sk-from-profile-3333")
    assert await key_sent("work") == ("sk-from-profile-3333", "auth profile work")
    assert await key_sent() == ("sk-from-store-2222", "secret anthropic-api-key")


def test_custom_key_names_and_profile_mistakes(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    store = make_store(tmp_path, "keyring")
    store.set("my-key", "sk-custom-secret-1")
    settings = Settings(
        providers={
            "openai": ProviderSettings(api_key_secret="my-key"),
            "groq": ProviderSettings(api_key_env="MY_GROQ"),
        },
        auth_profiles={"other": AuthProfileSettings(provider="groq", secret="my-key")},
    )
    registry = ProviderRegistry(
        settings, secrets=store, env={"MY_GROQ": "gsk-custom-env-1", "GROQ_API_KEY": "x"}
    )
    openai = registry.resolve_key("openai")
    assert openai is not None
    assert openai.value == "sk-custom-secret-1"
    groq = registry.resolve_key("groq")
    assert groq is not None
    assert (groq.value, groq.origin) == ("gsk-custom-env-1", "environment variable MY_GROQ")
    with pytest.raises(ProviderConfigError, match="auth profile other is for groq, not openai"):
        registry.resolve_key("openai", "other")
    with pytest.raises(ProviderConfigError, match="unknown auth profile 'nope'"):
        registry.resolve_key("openai", "nope")


# ---------------------------------------------------------------------------- auto-default


@pytest.mark.parametrize(
    ("env", "secrets", "enabled", "model"),
    [
        (
            {"ANTHROPIC_API_KEY": "sk-a-123456"},
            [],
            ["anthropic", "local"],
            "anthropic/claude-sonnet-4-6",
        ),
        ({"OPENAI_API_KEY": "sk-o-123456"}, [], ["openai", "local"], "openai/gpt-4.1"),
        (
            {"OPENAI_API_KEY": "sk-o-123456", "ANTHROPIC_API_KEY": "sk-a-123456"},
            [],
            ["anthropic", "openai", "local"],
            "anthropic/claude-sonnet-4-6",
        ),
        ({}, ["anthropic-api-key"], ["anthropic", "local"], "anthropic/claude-sonnet-4-6"),
        ({}, [], ["local"], "local/default"),
    ],
)
def test_the_auto_default(
    env: dict[str, str],
    secrets: list[str],
    enabled: list[str],
    model: str,
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
) -> None:
    store = make_store(tmp_path, "keyring")
    for name in secrets:
        store.set(name, "sk-stored-123456")
    closed = "http://127.0.0.1:9/v1"  # no Ollama / LM Studio answers
    env = {**env, "OLLAMA_BASE_URL": closed, "LMSTUDIO_BASE_URL": closed}
    registry = ProviderRegistry(Settings(), secrets=store, env=env)
    assert list(registry.configs) == enabled
    assert list(registry.auto_enabled) == enabled
    assert registry.default_provider == enabled[0]
    assert registry.default_model() == model
    reason = registry.auto_enabled[enabled[0]]
    assert ("is set" in reason) or ("secret" in reason) or ("local model" in reason)


@pytest.mark.parametrize("server", ["ollama", "lmstudio"])
async def test_a_running_local_server_comes_before_the_embedded_model(
    server: str, fake: FakeLLM
) -> None:
    """No key: a local server that answers `/v1/models` is the default (its first model,
    or the preset's default when it has it); the embedded model stays as the fallback."""
    other = "lmstudio" if server == "ollama" else "ollama"
    env = {
        f"{server.upper()}_BASE_URL": f"{fake.base_url}/v1",
        f"{other.upper()}_BASE_URL": "http://127.0.0.1:9/v1",
    }
    registry = await asyncio.to_thread(ProviderRegistry, Settings(), env=env)
    assert list(registry.auto_enabled) == [server, "local"]
    assert registry.default_model() == f"{server}/fake-model-1"
    assert "answers at" in registry.auto_enabled[server]


def test_configured_providers_turn_the_auto_default_off() -> None:
    settings = Settings(
        providers={"groq": ProviderSettings()},
        agents=AgentsSettings(model="groq/openai/gpt-oss-120b"),
    )
    registry = ProviderRegistry(settings, env={"ANTHROPIC_API_KEY": "sk-a-123456"})
    assert list(registry.configs) == ["groq"]
    assert registry.auto_enabled == {}
    assert registry.default_model() == "groq/openai/gpt-oss-120b"


# ---------------------------------------------------------------------------- catalogue


async def test_model_discovery_merges_caches_and_survives_failures(
    fakes: tuple[FakeLLM, FakeLLM],
) -> None:
    claude, local = fakes
    claude.models = [
        FakeModel("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
        FakeModel("claude-new", context_window=500_000),
    ]
    local.models = ["llama3.2", "nomic-embed-text", "qwen3:8b"]
    settings = Settings(
        providers={
            "anthropic": ProviderSettings(
                base_url=claude.anthropic_base_url, models=("claude-private",), max_retries=0
            ),
            "ollama": ProviderSettings(base_url=local.openai_base_url, max_retries=0),
            "openai": ProviderSettings(discover_models=False),
        },
        models=ModelsSettings(
            catalog=(
                ModelEntry(
                    "qwen3:8b", "ollama", name="Qwen 3 (8B)", context_window=40_960, reasoning=True
                ),
            )
        ),
    )
    now = [1000.0]
    registry = ProviderRegistry(
        settings, env={"ANTHROPIC_API_KEY": "sk-a-123456", "OPENAI_API_KEY": "sk-o-123456"}
    )
    catalog = ModelCatalog(registry, ttl_s=600, retry_s=60, clock=lambda: now[0])
    try:
        async with asyncio.timeout(TIMEOUT_S):
            models = {m.ref: m for m in await catalog.available()}
        assert claude.count("/v1/models") == local.count("/v1/models") == 1
        assert "anthropic/claude-sonnet-4-5-20250929" in models
        assert models["anthropic/claude-sonnet-4-5-20250929"].name == "Claude Sonnet 4.5"
        assert models["anthropic/claude-sonnet-4-5-20250929"].context_window == 200_000
        assert models["anthropic/claude-new"].context_window == 500_000
        assert models["anthropic/claude-private"].source == "config"
        assert "anthropic/claude-opus-4-1" not in models  # the provider's list wins
        assert "ollama/nomic-embed-text" not in models  # not a chat model
        qwen = models["ollama/qwen3:8b"]
        assert (qwen.name, qwen.context_window, qwen.reasoning) == ("Qwen 3 (8B)", 40_960, True)
        assert {m.id for m in models.values() if m.provider == "openai"} == {
            k.id for k in PRESETS["openai"].models
        }  # discovery off: the preset's known models
        assert catalog_entry(models["ollama/qwen3:8b"]) == {
            "id": "qwen3:8b",
            "name": "Qwen 3 (8B)",
            "provider": "ollama",
            "input": ["text"],
            "reasoning": True,
            "contextWindow": 40_960,
        }

        # Within the TTL: served from the cache.
        now[0] += 599
        assert {m.ref for m in catalog.models()} == set(models)
        async with asyncio.timeout(TIMEOUT_S):
            await catalog.available()
        assert claude.count("/v1/models") == local.count("/v1/models") == 1

        # Stale, and the providers fail: the last good lists stay, the errors are kept.
        now[0] += 2
        claude.models_error, local.models_error = 500, 401
        assert {m.ref for m in catalog.models()} == set(models)  # refreshing in the background
        async with asyncio.timeout(TIMEOUT_S):
            await catalog.refresh()
        assert claude.count("/v1/models") == local.count("/v1/models") == 2
        assert {m.ref for m in catalog.models()} == set(models)
        assert set(catalog.errors) == {"anthropic", "ollama"}
        assert "server error (500)" in catalog.errors["anthropic"]

        # Failing providers are asked again sooner (retry_s), and recover.
        now[0] += 61
        claude.models_error = local.models_error = None
        claude.models = ["claude-newer"]
        async with asyncio.timeout(TIMEOUT_S):
            refs = {m.ref for m in await catalog.available()}
        assert "anthropic/claude-newer" in refs
        assert "anthropic/claude-new" not in refs
        assert catalog.errors == {}
    finally:
        await catalog.close()
        await registry.close()


async def test_resolving_model_references(fakes: tuple[FakeLLM, FakeLLM]) -> None:
    claude, local = fakes
    claude.models = ["claude-sonnet-4-5-20250929"]
    local.models = ["llama3.2", "gpt-oss:20b"]
    settings = Settings(
        providers={
            "anthropic": ProviderSettings(base_url=claude.anthropic_base_url),
            "ollama": ProviderSettings(base_url=local.openai_base_url),
            "lmstudio": ProviderSettings(discover_models=False),
        }
    )
    registry = ProviderRegistry(settings, env={"ANTHROPIC_API_KEY": "sk-a-123456"})
    catalog = ModelCatalog(registry)
    try:
        # Before any model list arrived, a provider's own ids are taken on trust.
        provider, info = catalog.resolve("ollama/mistral-nemo")
        assert (provider.id, info.id, info.source) == ("ollama", "mistral-nemo", "config")
        async with asyncio.timeout(TIMEOUT_S):
            await catalog.available()
        provider, info = catalog.resolve("anthropic/claude-sonnet-4-5-20250929")
        assert (provider.id, info.provider, info.context_window) == (
            "anthropic",
            "anthropic",
            200_000,
        )
        _, alias = catalog.resolve("anthropic/claude-opus-4-1")  # a preset's known model
        assert alias.context_window == 200_000
        _, bare = catalog.resolve("gpt-oss:20b")
        assert bare.ref == "ollama/gpt-oss:20b"
        _, anything = catalog.resolve("lmstudio/whatever-is-loaded")
        assert anything.provider == "lmstudio"
        with pytest.raises(ProviderError) as caught:
            catalog.resolve("anthropic/claude-nope")
        assert caught.value.kind == "not_found"
        assert caught.value.message.startswith(
            "unknown model anthropic/claude-nope: run `moltis models` to see the available ones"
        )
        with pytest.raises(ProviderError, match="unknown model nope: run `moltis models`"):
            catalog.resolve("nope")
        with pytest.raises(ProviderError, match=r"provider gemini is not enabled"):
            catalog.resolve("gemini/gemini-2.5-pro")
    finally:
        await catalog.close()
        await registry.close()


# ---------------------------------------------------------------------------- prices, plugins


def test_prices_and_costs() -> None:
    million = Usage(1_000_000, 1_000_000, 1_000_000, 1_000_000)
    assert cost("anthropic/claude-sonnet-4-5", million) == pytest.approx(3 + 15 + 0.3 + 3.75)
    assert cost("anthropic/claude-sonnet-4-5-20250929", million) == pytest.approx(22.05)
    assert cost("openai/gpt-4o-mini", Usage(2_000_000, 1_000_000, 1_000_000)) == pytest.approx(
        0.3 + 0.6 + 0.075
    )
    assert cost("openai/gpt-4o", Usage(1_000, 0)) == pytest.approx(0.0025)
    assert cost("ollama/llama3.2", million) == 0.0
    assert cost("custom/unknown-model", million) == 0.0
    assert PriceTable().price("custom/unknown-model") is None
    overrides = {"openai/gpt-4o": PriceSettings(input=1.0, output=2.0, cache_read=0.5)}
    assert cost("openai/gpt-4o", million, overrides) == pytest.approx(3.5)
    assert cost("openrouter/gpt-4o", million, {"gpt-4o": PriceSettings(input=1.0)}) == 1.0


def test_the_builtin_plugin_registers_both_wire_kinds() -> None:
    from moltis_desktop.plugins.manager import Contributions, collect, load_plugins

    pm, errors = load_plugins(builtins=("moltis_desktop.providers.builtin",), entry_points=False)
    assert errors == []
    registered = Contributions()
    assert collect(pm, "register_providers", registered.register) == []
    specs = registered.values()
    assert sorted(s.kind for s in specs) == ["anthropic", "openai"]
    # Each item is recorded with the plugin that registered it.
    assert {plugin for plugin, _ in registered.items} == {"moltis_desktop.providers.builtin"}
    registry = ProviderRegistry(
        Settings(providers={"xai": ProviderSettings()}), specs=specs, env={}
    )
    assert type(registry.get("xai")).__name__ == "OpenAIProvider"


LIGHT_IMPORT = """
import sys
from moltis_desktop.config.settings import ProviderSettings, Settings
from moltis_desktop.providers.registry import ModelCatalog, ProviderRegistry
import moltis_desktop.providers.pricing
settings = Settings(providers={"anthropic": ProviderSettings(), "openai": ProviderSettings()})
registry = ProviderRegistry(settings, env={"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"})
registry.get("anthropic"), registry.get("openai")
ModelCatalog(registry).models()
sdks = sorted(m for m in sys.modules if m.split(".")[0] in {"anthropic", "openai"})
print(",".join(sdks) or "none")
"""


def test_building_providers_imports_no_sdk() -> None:
    assert run_python(LIGHT_IMPORT) == "none"


async def test_the_fake_answers_a_default_text_and_counts_requests(
    fakes: tuple[FakeLLM, FakeLLM],
) -> None:
    fake, _ = fakes
    fake.script(Turn(text="scripted"))
    settings = Settings(providers={"openai": ProviderSettings(base_url=fake.openai_base_url)})
    registry = ProviderRegistry(settings, env={"OPENAI_API_KEY": "sk-o-123456"})
    try:
        assert await say_hi(registry, "openai") == "scripted"
        assert await say_hi(registry, "openai") == "ok"
    finally:
        await registry.close()
    assert fake.count("/v1/chat/completions") == 2
    assert fake.pending == 0
