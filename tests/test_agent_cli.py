"""The agent from terminals: `moltis agent|sessions|send|models`, and the real `openclaw agent`,
against a gateway process whose provider is the fake LLM server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_llm import FakeLLM, Turn, agent_config
from tests.support.openclaw import OpenClaw
from tests.support.process import BIN, GatewayProcess, gateway_process

TOKEN = "agent-cli-token-0123456789"


@pytest.fixture
def gateway(fake: FakeLLM, tmp_path: Path) -> Iterator[GatewayProcess]:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "moltis.toml").write_text(agent_config("openai", fake))
    with gateway_process(home, token=TOKEN, FAKE_LLM_KEY="fake-key-0123456789") as gw:
        yield gw


async def moltis(gw: GatewayProcess, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "moltis"),
        *args,
        env={**gw.env, "MOLTIS_URL": gw.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_moltis_agent_streams_the_reply(gateway: GatewayProcess, fake: FakeLLM) -> None:
    fake.script(Turn(text="Hello from the fake model.", chunks=4))
    rc, out, err = await moltis(gateway, "agent", "--message", "hi there")
    assert rc == 0, err
    assert out.strip() == "Hello from the fake model."
    fake.script(Turn(text="Second reply."))
    rc, out, err = await moltis(gateway, "agent", "-m", "again", "--think", "low", "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["state"] == "final"
    assert result["text"] == "Second reply."
    assert result["usage"]["totalTokens"] == 15  # the fake's 10 in + 5 out
    rc, out, err = await moltis(
        gateway, "agent", "-m", "with another model", "--model", "fake/fake-model-2"
    )
    assert rc == 0, err
    assert fake.bodies("/v1/chat/completions")[-1]["model"] == "fake-model-2"


async def test_moltis_agent_reports_provider_errors(gateway: GatewayProcess, fake: FakeLLM) -> None:
    fake.script(Turn(error=(400, {})))
    rc, _, err = await moltis(gateway, "agent", "-m", "hi")
    assert rc == 1
    assert err.strip() == "moltis: fake rejected the request (400): fake error 400"


async def test_moltis_sessions_send_models(gateway: GatewayProcess, fake: FakeLLM) -> None:
    fake.script(Turn(text="first"))
    assert (await moltis(gateway, "agent", "-m", "one"))[0] == 0
    rc, out, err = await moltis(gateway, "sessions", "list")
    assert rc == 0, err
    assert "agent:main:main" in out
    assert "2 messages" in out
    rc, out, err = await moltis(gateway, "sessions", "history")
    assert rc == 0, err
    assert out.splitlines() == ["user: one", "assistant: first"]
    rc, out, err = await moltis(gateway, "send", "--to", "main", "--message", "a note")
    assert rc == 0, err
    assert "delivered to agent:main:main" in out
    rc, out, err = await moltis(gateway, "sessions", "history", "main", "--json")
    assert rc == 0, err
    assert json.loads(out)["messages"][-1]["content"][0]["text"] == "a note"
    rc, out, err = await moltis(gateway, "sessions", "clear")
    assert rc == 0, err
    assert "started over" in out
    rc, out, err = await moltis(gateway, "sessions", "history")
    assert rc == 0, err
    assert out.strip() == ""
    rc, out, err = await moltis(gateway, "models", "--refresh")
    assert rc == 0, err
    assert "fake/fake-model-1" in out
    assert "fake/fake-model-2" in out


@pytest.mark.openclaw
async def test_openclaw_agent_gets_the_reply(
    gateway: GatewayProcess, fake: FakeLLM, tmp_path: Path
) -> None:
    fake.script(Turn(text="The answer from the fake model, via Moltis."))
    openclaw = OpenClaw(gateway, tmp_path / "oc-home", TOKEN)
    proc = await asyncio.create_subprocess_exec(
        str(openclaw.node),
        str(openclaw.entry),
        "agent",
        "--agent",
        "main",
        "--message",
        "what is the answer?",
        "--json",
        "--timeout",
        "60",
        env=openclaw.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    result = json.loads(text[text.find("{") :])
    assert result["status"] == "ok"
    payloads = result["result"]["payloads"]
    assert payloads[0]["text"] == "The answer from the fake model, via Moltis."
    assert fake.count("/v1/chat/completions") == 1


async def test_moltis_agent_waits_as_long_as_the_reply_takes(
    gateway: GatewayProcess, fake: FakeLLM
) -> None:
    """`moltis agent` waits 120 s for each part of a reply by default (the local model's
    first load included); `--timeout` changes it."""
    rc, out, _ = await moltis(gateway, "agent", "--help")
    assert rc == 0 and "default 120" in " ".join(out.split())
    fake.script(Turn(text="Slow but sure.", chunks=1, delay_s=2.5))
    rc, out, err = await moltis(gateway, "agent", "-m", "take your time")
    assert rc == 0, err
    assert out.strip() == "Slow but sure."
    fake.script(Turn(text="Too slow.", chunks=1, delay_s=4.0))
    rc, _, err = await moltis(gateway, "agent", "--timeout", "1", "-m", "hurry")
    assert rc != 0
    assert "did not answer within 1 s" in err
