"""First-run set-up: `moltis onboard` against the fake provider (a real request with the
real SDK), the key kept in the secret store only, a local Ollama offered first, then the
embedded local model (no account: the built-in model, or a download from a loopback
mirror with its progress)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import ProviderSettings, Settings
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.onboarding import (
    LOCAL_LABEL,
    OnboardingError,
    Plan,
    check_connection,
    choices,
    detect_ollama,
    local_choice,
    needs_onboarding,
)
from moltis_desktop.providers.local_catalog import (
    BETTER_MIN_RAM_BYTES,
    BETTER_TIER_MODEL,
    BUILTIN_MODEL,
    DEFAULT_TIER_MODEL,
    LocalModelManager,
    default_catalog,
)
from moltis_desktop.providers.registry import ProviderRegistry
from tests.support.fake_llm import FakeLLM
from tests.support.model_server import ModelServer
from tests.support.process import BIN, base_env

KEY = "sk-ant-onboarding-0123456789"


DEAD_MIRROR = "http://127.0.0.1:9/"
"""Nothing answers there: a test that must not download cannot reach the internet either."""
GGUF = b"GGUF" + os.urandom(300_000)


async def onboard(
    home: Path, *args: str, stdin: str = "", mirror: str = DEAD_MIRROR
) -> tuple[int, str, str]:
    env = base_env(
        home,
        MOLTIS_SECRETS_PASSPHRASE="test-pass",
        HOME=str(home),
        MOLTIS_MODEL_MIRROR=mirror,
        OLLAMA_HOST="http://127.0.0.1:9",  # no Ollama
    )
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "moltis"),
        "onboard",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_onboard_tests_the_key_and_keeps_it_out_of_the_config(
    fake: FakeLLM, tmp_path: Path
) -> None:
    fake.api_key = KEY
    home = tmp_path / "home"
    rc, out, err = await onboard(
        home,
        "--provider", "anthropic",
        "--base-url", fake.anthropic_base_url,
        "--key-stdin",
        "--model", "fake-model-2",
        "--name", "Molty",
        "--yes",
        stdin=KEY + "\n",
    )  # fmt: skip
    assert rc == 0, err
    assert "it answered: 2 models" in out
    assert "Saved: anthropic/fake-model-2" in out
    # The connection test was a real request carrying the key.
    assert any(r.path == "/v1/models" and r.api_key == KEY for r in fake.requests)
    config = (home / "config" / "moltis.toml").read_text(encoding="utf-8")
    assert KEY not in config
    assert 'model = "anthropic/fake-model-2"' in config
    assert "[providers.anthropic]" in config and fake.anthropic_base_url in config
    assert 'name = "Molty"' in config
    store = SecretStore(home / "state", env={"MOLTIS_SECRETS_PASSPHRASE": "test-pass"})
    assert store.get("anthropic-api-key") == KEY
    assert KEY not in out + err


async def test_onboard_with_a_wrong_key_says_so_and_saves_nothing(
    fake: FakeLLM, tmp_path: Path
) -> None:
    fake.api_key = KEY
    home = tmp_path / "home"
    rc, _out, err = await onboard(
        home,
        "--provider", "anthropic",
        "--base-url", fake.anthropic_base_url,
        "--key-stdin",
        "--yes",
        stdin="sk-wrong\n",
    )  # fmt: skip
    assert rc == 1
    assert "the connection test failed" in err
    assert not (home / "config" / "moltis.toml").exists() or "anthropic" not in (
        home / "config" / "moltis.toml"
    ).read_text(encoding="utf-8")


async def test_a_running_ollama_is_offered_first(tmp_path: Path) -> None:
    local = LocalModelManager(tmp_path / "llm")
    app = web.Application()

    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "llama3.2:latest"}, {"name": "qwen3:4b"}]})

    app.router.add_get("/api/tags", tags)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://127.0.0.1:{port}"
        assert await detect_ollama(url) == ["llama3.2:latest", "qwen3:4b"]
        offered = await choices(url, local)
        assert offered[0].id == "ollama" and offered[0].models == ("llama3.2:latest", "qwen3:4b")
        assert not offered[0].needs_key
        # The local model right after a running Ollama, then the cloud providers.
        assert [c.id for c in offered[1:4]] == ["local", "anthropic", "openai"]
    finally:
        await runner.cleanup()
    # Nothing answering: not offered, and the local model comes first.
    assert await detect_ollama(url, timeout_s=0.3) is None
    assert [c.id for c in (await choices(url, local))[:2]] == ["local", "anthropic"]
    assert (await choices(url))[0].id == "anthropic"  # no model manager: no local choice


async def test_a_key_is_required_before_any_request() -> None:
    with pytest.raises(OnboardingError, match="needs an API key"):
        await check_connection(Plan(provider="openai"))


def test_needs_onboarding_only_when_nothing_is_set_up(tmp_path: Path) -> None:
    env = {"MOLTIS_SECRETS_PASSPHRASE": "p"}
    store = SecretStore(tmp_path, backend="file", env=env)
    assert needs_onboarding(Settings(), store, {})
    assert not needs_onboarding(Settings(), store, {"OPENAI_API_KEY": "sk"})
    assert not needs_onboarding(Settings(providers={"groq": ProviderSettings()}), store, {})
    store.set("anthropic-api-key", "sk-ant")
    assert not needs_onboarding(Settings(), store, {})


# ---------------------------------------------------------------- the local model


def test_the_local_choice_lists_the_catalog_with_states_and_sizes(tmp_path: Path) -> None:
    manager = LocalModelManager(tmp_path / "llm")
    small = local_choice(manager, total_ram=4 * 1024**3)
    assert small.label == LOCAL_LABEL and "no account needed" in small.label
    assert not small.needs_key
    options = {o.id: o for o in small.local_models}
    catalog = default_catalog()
    assert set(small.models) <= set(catalog)
    assert small.models[0] == BUILTIN_MODEL  # the built-in one first: no download
    builtin = options[BUILTIN_MODEL]
    assert builtin.installed and "answers at once" in builtin.label
    assert "small and weak" in builtin.label
    assert small.models[1] == DEFAULT_TIER_MODEL
    recommended = options[DEFAULT_TIER_MODEL]
    assert recommended.recommended and small.default_model == DEFAULT_TIER_MODEL
    if not recommended.installed:  # (its six parts may be installed as packages)
        assert recommended.label == ("Qwen2.5 Coder 0.5B Instruct, 491 MB download (recommended)")
        assert "Recommended: Qwen2.5 Coder 0.5B Instruct, 491 MB download" in (small.detail)
    assert options["qwen2.5-0.5b"].label == "Qwen2.5 0.5B Instruct, 491 MB download"
    assert options["llama-3.2-3b"].label == "Llama 3.2 3B Instruct, 2.0 GB download"
    assert "Built in: SmolLM2 135M Instruct" in small.detail

    better = local_choice(manager, total_ram=BETTER_MIN_RAM_BYTES)
    assert better.models[1] == BETTER_TIER_MODEL
    assert better.default_model == BETTER_TIER_MODEL
    assert "1.1 GB download (recommended)" in better.local_models[1].label


async def test_the_local_model_is_checked_without_a_key_or_a_request(tmp_path: Path) -> None:
    manager = LocalModelManager(tmp_path / "llm")
    plan = Plan(provider="local", model="builtin")
    models = await check_connection(plan, manager)
    assert plan.model == BUILTIN_MODEL and BUILTIN_MODEL in models
    with pytest.raises(OnboardingError, match="unknown local model 'gpt-5'"):
        await check_connection(Plan(provider="local", model="gpt-5"), manager)


async def test_onboard_local_with_the_builtin_model_downloads_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rc, out, err = await onboard(
        home, "--provider", "local", "--model", "builtin", "--name", "Molty", "--yes"
    )
    assert rc == 0, err
    assert "SmolLM2 135M Instruct: installed, no download." in out
    assert "Saved: local/smollm2-135m" in out
    assert "%" not in err  # no progress: nothing was downloaded
    assert not (home / "cache" / "llm").exists()
    config_file = home / "config" / "moltis.toml"
    text = config_file.read_text(encoding="utf-8")
    assert "[providers.local]" in text and "enabled = true" in text
    assert 'model = "local/smollm2-135m"' in text
    assert 'name = "Molty"' in text
    assert "key" not in text.lower()
    # The next gateway turn runs the built-in model.
    settings = ConfigStore(config_file, read_only=True).current.settings
    registry = ProviderRegistry(settings, env={}, probe_local_servers=False)
    try:
        assert list(registry.configs) == ["local"]
        assert registry.default_model() == "local/smollm2-135m"
    finally:
        await registry.close()
    assert not needs_onboarding(settings, None, {})


@pytest.fixture
async def mirror() -> AsyncIterator[ModelServer]:
    entry = default_catalog()["qwen2.5-0.5b"].entry
    key = f"qwen2.5-0.5b/{entry}"
    server = await ModelServer({key: GGUF}, etags={key: hashlib.sha256(GGUF).hexdigest()}).start()
    try:
        yield server
    finally:
        await server.close()


async def test_onboard_local_downloads_a_model_with_progress(
    mirror: ModelServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    rc, out, err = await onboard(
        home, "--provider", "local", "--model", "qwen2.5-0.5b", "--yes", mirror=mirror.mirror
    )
    assert rc == 0, err
    assert "Downloading Qwen2.5 0.5B Instruct (491 MB), checksummed…" in out
    # The progress bar of `moltis models local download` (lines when not on a terminal).
    assert "qwen2.5-0.5b 100%" in err and "MB/s" in err
    path = home / "cache" / "llm" / "qwen2.5-0.5b" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert path.read_bytes() == GGUF
    assert f"downloaded to {path}" in out
    assert [p for p, _ in mirror.requests] == ["qwen2.5-0.5b/qwen2.5-0.5b-instruct-q4_k_m.gguf"]
    text = (home / "config" / "moltis.toml").read_text(encoding="utf-8")
    assert 'model = "local/qwen2.5-0.5b"' in text and "[providers.local]" in text

    # Again: installed, nothing downloaded.
    rc, out, err = await onboard(
        home, "--provider", "local", "--model", "qwen2.5-0.5b", "--yes", mirror=mirror.mirror
    )
    assert rc == 0, err
    assert "installed, no download" in out
    assert len(mirror.requests) == 1


async def test_a_failed_download_says_what_to_do_and_saves_nothing(
    mirror: ModelServer, tmp_path: Path
) -> None:
    key = next(iter(mirror.files))
    mirror.etags[key] = "0" * 64  # the mirror states another hash: refused
    home = tmp_path / "home"
    rc, out, err = await onboard(
        home, "--provider", "local", "--model", "qwen2.5-0.5b", "--yes", mirror=mirror.mirror
    )
    assert rc == 1
    assert "the download of Qwen2.5 0.5B Instruct failed" in err
    assert "checksum mismatch" in err
    assert "Nothing was saved" in err
    assert "--model builtin" in err and "resumes" in err
    assert "Saved:" not in out
    config = home / "config" / "moltis.toml"
    assert not config.exists() or "local" not in config.read_text(encoding="utf-8")
