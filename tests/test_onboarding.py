"""First-run set-up: `moltis onboard` against the fake provider (a real request with the
real SDK), the key kept in the secret store only, a local Ollama offered first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import ProviderSettings, Settings
from moltis_desktop.onboarding import (
    OnboardingError,
    Plan,
    check_connection,
    choices,
    detect_ollama,
    needs_onboarding,
)
from tests.support.fake_llm import FakeLLM
from tests.support.process import BIN, base_env

KEY = "sk-ant-onboarding-0123456789"


async def onboard(home: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = base_env(home, MOLTIS_SECRETS_PASSPHRASE="test-pass", HOME=str(home))
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


async def test_a_running_ollama_is_offered_first() -> None:
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
        offered = await choices(url)
        assert offered[0].id == "ollama" and offered[0].models == ("llama3.2:latest", "qwen3:4b")
        assert not offered[0].needs_key
        assert [c.id for c in offered[1:3]] == ["anthropic", "openai"]
    finally:
        await runner.cleanup()
    # Nothing answering: not offered.
    assert await detect_ollama(url, timeout_s=0.3) is None
    assert (await choices(url))[0].id == "anthropic"


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
