"""The providers over the real anthropic and openai SDKs, against FakeLLM on loopback:
streaming, tool calls, thinking, usage, prompt caching, retries and errors, aborts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from moltis_desktop.config.settings import ProviderSettings, Settings
from moltis_desktop.providers.anthropic import THINKING_BUDGETS, build_params
from moltis_desktop.providers.base import (
    Completed,
    CompletionRequest,
    ImagePart,
    Message,
    Provider,
    ProviderError,
    ProviderEvent,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCall,
    ToolCallReady,
    ToolCallStarted,
    ToolResult,
    ToolSpec,
    Usage,
)
from moltis_desktop.providers.openai_compat import build_params as openai_params
from moltis_desktop.providers.registry import ProviderRegistry
from moltis_desktop.providers.resolved import resolve_config
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.process import free_port

KEY = "sk-test-0123456789"
TIMEOUT_S = 15.0
APIS = ("anthropic", "openai")
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}

MakeProvider = Callable[..., Provider]


@pytest.fixture
async def make_provider(fake: FakeLLM) -> AsyncIterator[MakeProvider]:
    """Providers built the way the gateway builds them: registry + built-in plugin."""
    registries: list[ProviderRegistry] = []

    def make(api: str, *, key: str | None = KEY, **settings: Any) -> Provider:
        base = fake.anthropic_base_url if api == "anthropic" else fake.openai_base_url
        settings.setdefault("base_url", base)
        env = {f"{api.upper()}_API_KEY": key} if key else {}
        registry = ProviderRegistry(
            Settings(providers={api: ProviderSettings(**settings)}), env=env
        )
        registries.append(registry)
        return registry.get(api)

    yield make
    async with asyncio.timeout(TIMEOUT_S):
        for registry in registries:
            await registry.close()


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def request(api: str, *messages: Message, **kwargs: Any) -> CompletionRequest:
    return CompletionRequest(MODELS[api], messages or (user("hi"),), **kwargs)


async def collect(provider: Provider, req: CompletionRequest) -> list[ProviderEvent]:
    async with asyncio.timeout(TIMEOUT_S):
        return [event async for event in provider.stream(req)]


def completed(events: list[ProviderEvent]) -> Completed:
    finals = [e for e in events if isinstance(e, Completed)]
    assert len(finals) == 1
    assert events[-1] is finals[0]
    return finals[0]


# ---------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("api", APIS)
async def test_text_streams_in_increments(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(Turn(text="hello there, world", chunks=3))
    provider = make_provider(api)
    events = await collect(provider, request(api, system="be brief"))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["hello ", "there,", " world"]
    done = completed(events)
    assert done.message == Message("assistant", (TextPart("hello there, world"),))
    assert done.stop_reason == "end_turn"
    sent = fake.last(PATHS[api])
    assert sent.api_key == KEY
    assert sent.body["model"] == MODELS[api]
    assert sent.body["stream"] is True
    if api == "anthropic":
        assert sent.headers["anthropic-version"]
        assert sent.body["system"][0]["text"] == "be brief"
    else:
        assert sent.body["messages"][0] == {"role": "system", "content": "be brief"}
        assert sent.body["stream_options"] == {"include_usage": True}
        assert sent.body["max_completion_tokens"] == 4096  # OpenAI's own API


@pytest.mark.parametrize("api", APIS)
async def test_three_tool_calls_two_of_them_parallel(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(
        Turn(text="Let me check.", tool_calls=[("current_time", {})]),
        Turn(
            tool_calls=[
                ("current_time", {"timezone": "Europe/Paris"}),
                ("sessions_list", {"limit": 5, "kinds": ["main", "group"]}),
            ]
        ),
        Turn(text="It is noon; you have 2 sessions."),
    )
    provider = make_provider(api)
    tools = (
        ToolSpec("current_time", "The time.", {"type": "object", "properties": {}}),
        ToolSpec("sessions_list", "Sessions.", {"type": "object", "properties": {}}),
    )
    history: list[Message] = [user("what time is it, and my sessions?")]
    rounds: list[list[ProviderEvent]] = []
    for _ in range(3):
        events = await collect(provider, request(api, *history, tools=tools))
        rounds.append(events)
        done = completed(events)
        history.append(done.message)
        if done.stop_reason != "tool_use":
            break
        results = tuple(
            ToolResult(c.id, c.name, f"result of {c.name}") for c in done.message.tool_calls
        )
        history.append(Message("user", results))

    first, second, third = (completed(r) for r in rounds)
    assert first.stop_reason == second.stop_reason == "tool_use"
    assert third.stop_reason == "end_turn"
    assert first.message.text == "Let me check."
    calls = second.message.tool_calls
    assert [(c.name, dict(c.arguments)) for c in calls] == [
        ("current_time", {"timezone": "Europe/Paris"}),
        ("sessions_list", {"limit": 5, "kinds": ["main", "group"]}),
    ]
    assert len({c.id for c in calls}) == 2
    started = [e for e in rounds[1] if isinstance(e, ToolCallStarted)]
    ready = [e for e in rounds[1] if isinstance(e, ToolCallReady)]
    assert [(s.index, s.id, s.name) for s in started] == [
        (i, c.id, c.name) for i, c in enumerate(calls)
    ]
    assert [(r.index, r.call) for r in ready] == list(enumerate(calls))
    assert third.message.text == "It is noon; you have 2 sessions."

    # What went back to the model: the calls replayed and their results, by id.
    last = fake.last(PATHS[api]).body
    if api == "anthropic":
        replayed = last["messages"][3]
        assert replayed["role"] == "assistant"
        assert [b["input"] for b in replayed["content"] if b["type"] == "tool_use"] == [
            {"timezone": "Europe/Paris"},
            {"limit": 5, "kinds": ["main", "group"]},
        ]
        results = last["messages"][4]["content"]
        assert [(b["type"], b["tool_use_id"]) for b in results] == [
            ("tool_result", c.id) for c in calls
        ]
        assert results[-1]["cache_control"] == {"type": "ephemeral"}
        assert [t["name"] for t in last["tools"]] == ["current_time", "sessions_list"]
    else:
        roles = [m["role"] for m in last["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant", "tool", "tool"]
        assert [m["tool_call_id"] for m in last["messages"][4:]] == [c.id for c in calls]
        assert last["messages"][3]["tool_calls"][1]["function"]["name"] == "sessions_list"
        assert [t["function"]["name"] for t in last["tools"]] == ["current_time", "sessions_list"]


@pytest.mark.parametrize("api", APIS)
async def test_usage_is_exactly_what_the_server_reported(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    scripted = Usage(
        input_tokens=1234, output_tokens=56, cache_read_tokens=789, cache_write_tokens=10
    )
    fake.script(Turn(text="x", usage=scripted), Turn(text="y"))
    provider = make_provider(api)
    assert completed(await collect(provider, request(api))).usage == scripted
    assert completed(await collect(provider, request(api))).usage == Usage(10, 5)


async def test_anthropic_thinking_streams_and_is_replayed_with_its_signature(
    fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(Turn(text="42", thinking="because six times seven", signature="sig-abc-123"))
    provider = make_provider("anthropic")
    events = await collect(provider, request("anthropic", thinking="medium", max_tokens=1024))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert thinking == "because six times seven"
    message = completed(events).message
    assert message.parts[0] == ThinkingPart("because six times seven", "sig-abc-123")
    assert message.text == "42"
    sent = fake.last("/v1/messages").body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] > 4096  # the budget is part of max_tokens

    await collect(
        provider, request("anthropic", user("q"), message, user("and?"), thinking="medium")
    )
    replay = fake.last("/v1/messages").body["messages"][1]["content"]
    assert replay[0] == {
        "type": "thinking",
        "thinking": "because six times seven",
        "signature": "sig-abc-123",
    }


def test_thinking_levels_map_to_budgets_and_efforts() -> None:
    budgets = {"minimal": 1024, "low": 2048, "medium": 4096, "high": 8192, "xhigh": 16_384}
    assert budgets == THINKING_BUDGETS
    for level, budget in budgets.items():
        params = build_params(request("anthropic", thinking=level, max_tokens=2048), cache=True)
        assert params["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert params["max_tokens"] > budget
    off = build_params(request("anthropic", temperature=0.2), cache=True)
    assert "thinking" not in off
    assert off["temperature"] == 0.2
    adaptive = build_params(
        CompletionRequest("claude-opus-4-6", (user("hi"),), thinking="high"), cache=False
    )
    assert adaptive["thinking"] == {"type": "adaptive"}
    assert adaptive["output_config"] == {"effort": "high"}

    openai = resolve_config("openai")
    reasoning = openai_params(CompletionRequest("o3-mini", (user("hi"),), thinking="xhigh"), openai)
    assert reasoning["reasoning_effort"] == "high"
    xai = resolve_config("xai")
    grok = openai_params(CompletionRequest("grok-3-mini", (user("hi"),), thinking="medium"), xai)
    assert grok["reasoning_effort"] == "high"  # xAI takes low or high only
    plain = openai_params(CompletionRequest("gpt-4o", (user("hi"),), thinking="high"), openai)
    assert "reasoning_effort" not in plain
    deepseek = resolve_config("deepseek")
    other = openai_params(
        CompletionRequest("deepseek-reasoner", (user("hi"),), thinking="high"), deepseek
    )
    assert "reasoning_effort" not in other
    assert other["max_tokens"] == 4096  # compatible servers know max_tokens only


async def test_openai_reasoning_content_and_effort(
    fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(Turn(text="done", thinking="thinking hard"))
    provider = make_provider("openai")
    req = CompletionRequest("o3-mini", (user("hi"),), thinking="low")
    events = await collect(provider, req)
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == "thinking hard"
    assert completed(events).message.parts == (ThinkingPart("thinking hard"), TextPart("done"))
    assert fake.last("/v1/chat/completions").body["reasoning_effort"] == "low"


async def test_anthropic_prompt_caching_markers(fake: FakeLLM, make_provider: MakeProvider) -> None:
    provider = make_provider("anthropic")
    history = (user("first"), Message("assistant", (TextPart("answer"),)), user("second"))
    await collect(provider, request("anthropic", *history, system="sys"))
    body = fake.last("/v1/messages").body
    assert body["system"] == [
        {"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}
    ]
    marked = [
        (i, b["text"])
        for i, m in enumerate(body["messages"])
        for b in m["content"]
        if "cache_control" in b
    ]
    assert marked == [(2, "second")]

    await collect(provider, request("anthropic", *history, system="sys", cache=False))
    assert "cache_control" not in str(fake.last("/v1/messages").body)


@pytest.mark.parametrize("api", APIS)
async def test_images_are_sent_in_each_apis_shape(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    provider = make_provider(api)
    image = ImagePart("image/png", "iVBORw0KGgo=")
    await collect(provider, request(api, Message("user", (TextPart("what is it?"), image))))
    content = fake.last(PATHS[api]).body["messages"][-1]["content"]
    if api == "anthropic":
        assert content[1]["source"] == {
            "type": "base64",
            "media_type": "image/png",
            "data": "iVBORw0KGgo=",
        }
    else:
        assert content[1] == {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
        }


async def test_a_deprecated_model_is_logged_not_raised(
    fake: FakeLLM, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    # filterwarnings=error: the SDK's DeprecationWarning would fail the call if it escaped.
    provider = make_provider("anthropic")
    # One the installed SDK deprecates and no other test calls: the warning is logged once
    # per process.
    model = _deprecated_model()
    request = CompletionRequest(model, (user("hi"),))
    with caplog.at_level(logging.WARNING, logger="moltis_desktop.providers.anthropic"):
        for _ in range(2):
            assert completed(await collect(provider, request)).message.text == "ok"
    (record,) = [r for r in caplog.records if f"'{model}'" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(f"anthropic SDK: The model '{model}' is deprecated")


def _deprecated_model() -> str:
    # The SDK's list changes with each release (and moved module in 2.13).
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:
        from anthropic.resources.messages.messages import DEPRECATED_MODELS
    called_elsewhere = {"claude-sonnet-4-5", "claude-sonnet-4-5-20250929"}
    candidates = sorted(set(DEPRECATED_MODELS) - called_elsewhere)
    if not candidates:
        pytest.fail("the installed anthropic SDK deprecates no model this test can use")
    return candidates[0]


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("api", APIS)
async def test_429_with_retry_after_is_retried_by_the_sdk(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(Turn(error=(429, {"retry-after": "0"})), Turn(text="after the wait"))
    provider = make_provider(api, max_retries=2)
    events = await collect(provider, request(api))
    assert completed(events).message.text == "after the wait"
    assert fake.count(PATHS[api]) == 2


@pytest.mark.parametrize("api", APIS)
async def test_server_errors_exhaust_the_retries(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(*[Turn(error=500)] * 2)
    provider = make_provider(api, max_retries=1)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(api))
    error = caught.value
    assert (error.kind, error.status, error.provider, error.retryable) == ("server", 500, api, True)
    assert "after 1 retries" in error.message
    assert fake.count(PATHS[api]) == 2


@pytest.mark.parametrize("api", APIS)
async def test_401_says_how_to_check_the_key(api: str, make_provider: MakeProvider) -> None:
    async with FakeLLM(api_key="sk-the-right-one-000") as fake:
        provider = make_provider(
            api, base_url=fake.anthropic_base_url if api == "anthropic" else fake.openai_base_url
        )
        with pytest.raises(ProviderError) as caught:
            await collect(provider, request(api))
    assert caught.value.kind == "auth"
    assert caught.value.message == (
        f"{api} rejected the API key (401): check `moltis secrets get {api}-api-key`"
    )


@pytest.mark.parametrize("api", APIS)
async def test_a_missing_key_says_where_to_put_one(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    provider = make_provider(api, key=None)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(api))
    assert caught.value.kind == "auth"
    assert caught.value.message == (
        f"no API key for {api}: run `moltis secrets set {api}-api-key` or set {api.upper()}_API_KEY"
    )
    assert fake.requests == []


@pytest.mark.parametrize("api", APIS)
async def test_an_unreachable_server(api: str, make_provider: MakeProvider) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    provider = make_provider(api, base_url=url, max_retries=0)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(api))
    assert caught.value.kind == "unreachable"
    assert caught.value.message.startswith(f"cannot reach {api} at {url} (")
    assert "check the network and providers." in caught.value.message


@pytest.mark.parametrize("api", APIS)
async def test_a_server_that_stalls_times_out(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(Turn(text="slow", hang=True))
    provider = make_provider(api, max_retries=0, timeout_s=0.3)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(api))
    assert caught.value.kind == "timeout"
    assert "providers." in caught.value.message


@pytest.mark.parametrize(
    ("api", "turn", "kind"),
    [
        (
            "anthropic",
            Turn(error=400, error_message="prompt is too long: 210000 tokens > 200000 maximum"),
            "context_overflow",
        ),
        (
            "openai",
            Turn(
                error=400,
                error_code="context_length_exceeded",
                error_message="This model's maximum context length is 128000 tokens.",
            ),
            "context_overflow",
        ),
        ("anthropic", Turn(error=404, error_message="model: nope"), "not_found"),
        ("openai", Turn(error=404), "not_found"),
        ("anthropic", Turn(error=400, error_message="messages: field required"), "bad_request"),
        ("anthropic", Turn(text="partial", stream_error="overloaded_error"), "server"),
        ("openai", Turn(text="partial", stream_error="server_error"), "server"),
    ],
)
async def test_errors_map_to_kinds(
    api: str, turn: Turn, kind: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(turn)
    provider = make_provider(api, max_retries=0)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(api))
    assert caught.value.kind == kind
    if kind == "context_overflow":
        assert "/compact" in caught.value.message
    if kind == "not_found":
        assert "`moltis models`" in caught.value.message


@pytest.mark.parametrize("api", APIS)
async def test_cancelling_mid_stream_drops_the_connection(
    api: str, fake: FakeLLM, make_provider: MakeProvider
) -> None:
    fake.script(Turn(text="a long answer that never ends", chunks=8, delay_s=0.01, hang=True))
    provider = make_provider(api)
    first = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(request(api)):
            if isinstance(event, TextDelta):
                first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(TIMEOUT_S):
        await first.wait()
        await fake.hanging.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.disconnected.wait()
    assert fake.disconnects == 1
    # The provider is still usable afterwards.
    assert completed(await collect(provider, request(api))).message.text == "ok"


# ---------------------------------------------------------------------------- the fake itself


async def test_the_fake_answers_non_streaming_calls_in_each_apis_shape(fake: FakeLLM) -> None:
    import anthropic
    import openai

    script = Turn(text="hi", thinking="hm", tool_calls=[("current_time", {"tz": "UTC"})])
    fake.script(script, script)
    async with asyncio.timeout(TIMEOUT_S):
        async with anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.anthropic_base_url) as a:
            message = await a.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.openai_base_url) as o:
            chat = await o.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use"
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == '{"tz": "UTC"}'
    assert fake.pending == 0
    assert fake.count("/v1/messages") == fake.count("/v1/chat/completions") == 1


def test_tool_result_errors_and_order_in_anthropic_turns() -> None:
    message = Message(
        "user",
        (
            TextPart("also this"),
            ToolResult("toolu_1", "current_time", "no such zone", is_error=True),
        ),
    )
    call = Message("assistant", (ToolCall("toolu_1", "current_time", {"timezone": "x"}),))
    params = build_params(request("anthropic", user("q"), call, message), cache=False)
    content = params["messages"][2]["content"]
    assert content[0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "no such zone",
        "is_error": True,
    }
    assert content[1] == {"type": "text", "text": "also this"}
