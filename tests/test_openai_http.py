"""The OpenAI-compatible endpoint, driven by the real `openai` SDK against our gateway, which
talks to the fake provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.fake_llm import (
    FakeLLM,
    Turn,
    Usage,
    agent_config,
    message_texts,
    system_text,
)

CHAT = "/v1/chat/completions"
TWO_AGENTS = """
[[agents.list]]
id = "main"

[[agents.list]]
id = "beta"
model = "fake/fake-model-2"
"""
T = 20.0
"""Upper bound of every wait."""


async def start(
    start_gateway: StartGateway,
    fake: FakeLLM,
    *,
    kind: str = "openai",
    enabled: bool = True,
    extra: str = "",
) -> GatewayHandle:
    return await start_gateway(
        agent_config(kind, fake, extra),
        env={"FAKE_LLM_KEY": "fake-key-0123456789"},
        overrides={"gateway": {"chat_completions": enabled}},
    )


@pytest.fixture
async def clients() -> AsyncIterator[list[AsyncOpenAI]]:
    made: list[AsyncOpenAI] = []
    yield made
    for client in made:
        await client.close()


def sdk(made: list[AsyncOpenAI], handle: GatewayHandle, api_key: str | None = None) -> AsyncOpenAI:
    # No retries: a test must see the first answer, and 5xx/429 would otherwise be retried.
    client = AsyncOpenAI(
        base_url=f"{handle.http}/v1",
        api_key=api_key if api_key is not None else handle.token,
        max_retries=0,
        timeout=T,
    )
    made.append(client)
    return client


async def collect(stream: AsyncIterator[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def session_keys(handle: GatewayHandle, make_client: MakeClient) -> set[str]:
    client = make_client(handle.url)
    assert (await client.connect(token=handle.token, scopes=["operator.read"]))["ok"]
    listed = await asyncio.wait_for(client.call("sessions.list"), T)
    await client.close()
    return {s["key"] for s in listed["sessions"]}


async def until_no_sessions(handle: GatewayHandle, make_client: MakeClient) -> None:
    """Wait until the one-off session is gone (it goes once the stopped run has ended)."""
    for _ in range(100):
        if not await session_keys(handle, make_client):
            return
        await asyncio.sleep(0.05)
    assert await session_keys(handle, make_client) == set()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_reply_with_usage(
    kind: str,
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    make_client: MakeClient,
) -> None:
    handle = await start(start_gateway, fake, kind=kind)
    fake.script(Turn(text="Hello from the agent.", usage=Usage(100, 20, 30, 40)))
    client = sdk(clients, handle)
    reply = await client.chat.completions.create(
        model="moltis:main", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "moltis:main"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello from the agent."
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    # prompt_tokens counts the cache reads and writes, as OpenAI's does.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (170, 20)
    assert reply.usage.total_tokens == 190
    path = "/v1/messages" if kind == "anthropic" else CHAT
    body = fake.bodies(path)[-1]
    assert message_texts(body, "user") == ["hi"]
    assert "OpenAI-compatible API" in system_text(body)  # our system prompt went along
    # Stateless: the one-off session is gone (its transcript archived).
    assert await session_keys(handle, make_client) == set()
    assert list(handle.home.glob("state/agents/main/sessions/*.jsonl.deleted.*"))


async def test_a_one_off_session_going_away_is_announced(
    start_gateway: StartGateway, fake: FakeLLM, clients: list[AsyncOpenAI], make_client: MakeClient
) -> None:
    """The one-off session is deleted from a worker thread; the session store's announcement
    still reaches clients, on the event loop, as `sessions.changed`."""
    handle = await start(start_gateway, fake)
    watcher = make_client(handle.url)
    assert (await watcher.connect(token=handle.token, scopes=["operator.read"]))["ok"]
    fake.script(Turn(text="Gone soon."))
    reply = await sdk(clients, handle).chat.completions.create(
        model="moltis", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Gone soon."
    event = (await watcher.next_event("sessions.changed", timeout=T))["payload"]
    assert event["reason"] == "delete"
    assert event["sessionKey"].startswith("agent:main:openai:")
    assert await session_keys(handle, make_client) == set()


async def test_a_streamed_reply(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    http_session: aiohttp.ClientSession,
) -> None:
    handle = await start(start_gateway, fake)
    text = "A streamed answer that arrives in many small pieces."
    fake.script(Turn(text=text, chunks=8, delay_s=0.02, usage=Usage(12, 7, 3, 0)))
    client = sdk(clients, handle)
    stream = await client.chat.completions.create(
        model="moltis",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = await asyncio.wait_for(collect(stream), T)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(pieces) == text
    assert len(pieces) >= 4, "deltas are passed on as they come, not coalesced"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (15, 7, 22)
    # On the wire: SSE `data:` lines, ending with [DONE].
    fake.script(Turn(text="raw"))
    async with http_session.post(
        f"{handle.http}{CHAT}",
        json={"messages": [{"role": "user", "content": "x"}], "stream": True},
        headers={"Authorization": f"Bearer {handle.token}"},
        timeout=aiohttp.ClientTimeout(total=T),
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.text()
    lines = [line for line in raw.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert "usage" not in json.loads(lines[-2].removeprefix("data: "))


async def test_the_user_field_keeps_a_session(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    make_client: MakeClient,
) -> None:
    handle = await start(start_gateway, fake)
    fake.script(Turn(text="first answer"), Turn(text="second answer"))
    client = sdk(clients, handle)
    first = [{"role": "user", "content": "first question"}]
    reply = await client.chat.completions.create(model="moltis", messages=first, user="alice")
    assert reply.choices[0].message.content == "first answer"
    # The client resends the conversation, as OpenAI clients do; the session already holds it.
    again = [
        *first,
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    await client.chat.completions.create(model="moltis", messages=again, user="alice")
    body = fake.bodies(CHAT)[-1]
    assert message_texts(body, "user") == ["first question", "second question"]
    assert message_texts(body, "assistant") == ["first answer"]
    assert await session_keys(handle, make_client) == {"agent:main:openai:alice"}


async def test_a_stateless_call_carries_the_request_messages(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    make_client: MakeClient,
) -> None:
    handle = await start(start_gateway, fake)
    fake.script(Turn(text="Vous vous appelez Ada."))
    client = sdk(clients, handle)
    reply = await client.chat.completions.create(
        model="moltis:main",
        messages=[
            {"role": "system", "content": "Always answer in French."},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Nice to meet you, Ada."},
            {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
        ],
    )
    assert reply.choices[0].message.content == "Vous vous appelez Ada."
    body = fake.bodies(CHAT)[-1]
    assert message_texts(body, "user") == ["My name is Ada.", "What is my name?"]
    assert message_texts(body, "assistant") == ["Nice to meet you, Ada."]
    assert "Always answer in French." in message_texts(body, "system")[0]
    assert await session_keys(handle, make_client) == set()


async def test_agent_selection(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    make_client: MakeClient,
) -> None:
    handle = await start(start_gateway, fake, extra=TWO_AGENTS)
    client = sdk(clients, handle)
    hi = [{"role": "user", "content": "hi"}]

    async def model_used(**kwargs: Any) -> str:
        await client.chat.completions.create(messages=hi, **kwargs)
        return str(fake.bodies(CHAT)[-1]["model"])

    assert await model_used(model="moltis:beta") == "fake-model-2"
    assert await model_used(model="openclaw:beta") == "fake-model-2"
    assert await model_used(model="agent:main") == "fake-model-1"
    assert await model_used(model="moltis", extra_headers={"x-openclaw-agent-id": "beta"}) == (
        "fake-model-2"
    )
    assert await model_used(model="moltis", extra_headers={"x-moltis-agent-id": "beta"}) == (
        "fake-model-2"
    )
    # A provider/model name runs the default agent on that model.
    assert await model_used(model="fake/fake-model-2") == "fake-model-2"
    # The session header routes the turn (and keeps it).
    await client.chat.completions.create(
        model="moltis", messages=hi, extra_headers={"x-openclaw-session-key": "agent:beta:work"}
    )
    await client.chat.completions.create(
        model="moltis:beta", messages=hi, extra_headers={"x-moltis-session-key": "notes"}
    )
    await client.chat.completions.create(model="moltis:beta", messages=hi, user="bob smith")
    keys = await session_keys(handle, make_client)
    assert {"agent:beta:work", "agent:beta:notes"} <= keys
    assert len([k for k in keys if k.startswith("agent:beta:openai:u-")]) == 1
    assert len(keys) == 3
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="moltis:nobody", messages=hi)
    assert "unknown agent 'nobody'" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nowhere/none", messages=hi)
    models = {m.id for m in (await client.models.list()).data}
    assert {"moltis:main", "agent:main", "moltis:beta", "agent:beta"} <= models
    assert {"fake/fake-model-1", "fake/fake-model-2"} <= models
    assert (await client.models.retrieve("fake/fake-model-2")).owned_by == "fake"


async def test_a_disabled_endpoint_is_404(
    start_gateway: StartGateway, fake: FakeLLM, clients: list[AsyncOpenAI]
) -> None:
    handle = await start(start_gateway, fake, enabled=False)
    client = sdk(clients, handle)
    with pytest.raises(openai.NotFoundError) as refused:
        await client.chat.completions.create(
            model="moltis", messages=[{"role": "user", "content": "hi"}]
        )
    assert "enable gateway.chat_completions" in refused.value.message
    assert refused.value.code == "endpoint_disabled"
    assert refused.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        await client.models.list()
    assert not fake.bodies(CHAT)


async def test_a_wrong_token_is_401(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    http_session: aiohttp.ClientSession,
) -> None:
    handle = await start(start_gateway, fake)
    client = sdk(clients, handle, api_key="not-the-token")
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.chat.completions.create(
            model="moltis", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "invalid_api_key"
    assert "gateway token" in refused.value.message
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()
    async with http_session.post(
        f"{handle.http}{CHAT}",
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=aiohttp.ClientTimeout(total=T),
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_api_key"
    assert not fake.bodies(CHAT)


async def test_a_bad_body_is_400(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    http_session: aiohttp.ClientSession,
) -> None:
    handle = await start(start_gateway, fake)
    client = sdk(clients, handle)
    cases: list[tuple[list[Any], str]] = [
        ([{"role": "assistant", "content": "hello"}], "last message must have role `user`"),
        ([], "non-empty list"),
        ([{"role": "user", "content": "   "}], "last user message is empty"),
        (
            [
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                {"role": "user", "content": "x"},
            ],
            "`tool` messages are not supported",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
            "`data:` URLs",
        ),
    ]
    for messages, expected in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="moltis", messages=messages)
        assert expected in refused.value.message, refused.value.message
    headers = {"Authorization": f"Bearer {handle.token}", "Content-Type": "application/json"}
    for raw, expected in ((b"{not json", "not valid JSON"), (b"{}", "`messages`")):
        async with http_session.post(
            f"{handle.http}{CHAT}", data=raw, headers=headers, timeout=aiohttp.ClientTimeout(T)
        ) as resp:
            assert resp.status == 400
            assert expected in (await resp.json())["error"]["message"]
    assert not fake.bodies(CHAT)


async def test_provider_failures(
    start_gateway: StartGateway, fake: FakeLLM, clients: list[AsyncOpenAI]
) -> None:
    handle = await start(start_gateway, fake)
    client = sdk(clients, handle)
    hi = [{"role": "user", "content": "hi"}]
    fake.script(Turn(error=(429, {"retry-after": "0"})))
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="moltis", messages=hi)
    # Before anything streamed, a failure keeps its HTTP status.
    fake.script(Turn(error=(401, {})))
    with pytest.raises(openai.APIStatusError) as failed:
        await client.chat.completions.create(model="moltis", messages=hi, stream=True)
    assert failed.value.status_code == 502
    # After, it arrives as an error message in the stream.
    fake.script(Turn(text="partial answer", chunks=2, stream_error="server_error"))
    stream = await client.chat.completions.create(model="moltis", messages=hi, stream=True)
    seen: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)

    with pytest.raises(openai.APIError) as broken:
        await asyncio.wait_for(read(), T)
    assert "".join(seen) == "partial answer"
    assert broken.value.message == (
        "fake failed with a server error (server_error): The server had an error. "
        "Try again later, or configure a fallback model"
    )


async def test_a_client_leaving_mid_stream_stops_the_run(
    start_gateway: StartGateway,
    fake: FakeLLM,
    clients: list[AsyncOpenAI],
    make_client: MakeClient,
) -> None:
    handle = await start(start_gateway, fake)
    fake.script(Turn(text="This answer never finishes, it hangs", chunks=10, hang=True))
    client = sdk(clients, handle)
    stream = await client.chat.completions.create(
        model="moltis", messages=[{"role": "user", "content": "tell me a story"}], stream=True
    )
    pieces = aiter(stream)
    run_id = ""
    while True:
        chunk = await asyncio.wait_for(anext(pieces), T)
        run_id = chunk.id.removeprefix("chatcmpl-")
        if chunk.choices[0].delta.content:
            break
    await asyncio.wait_for(fake.hanging.wait(), T)
    await asyncio.wait_for(stream.close(), T)
    await asyncio.wait_for(fake.disconnected.wait(), T)  # the provider stream was closed
    services = handle.gateway.state.agent
    assert services is not None
    run = services.chat.runs.get(run_id)
    assert run is not None
    await asyncio.wait_for(run.done.wait(), T)
    assert run.status == "aborted"
    await until_no_sessions(handle, make_client)
    # A client that gives up waiting for a whole answer stops its run too.
    fake.script(Turn(text="Another answer that hangs", chunks=5, hang=True))
    before = fake.disconnects
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=1.0).chat.completions.create(
            model="moltis", messages=[{"role": "user", "content": "and another"}]
        )
    for _ in range(200):
        if fake.disconnects > before and not services.chat.runs.active():
            break
        await asyncio.sleep(0.05)
    assert fake.disconnects > before
    assert not services.chat.runs.active()
    await until_no_sessions(handle, make_client)
