"""Full turns through the gateway over WebSocket, for both providers' wire APIs, with the
real SDKs talking to a fake provider server."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.fake_llm import (
    FakeLLM,
    Turn,
    Usage,
    agent_config,
    message_texts,
    system_text,
)
from tests.support.wsclient import ProtoClient

KINDS = ("anthropic", "openai")
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


@dataclass
class Chat:
    """A connected operator plus helpers to run chat turns."""

    gw: GatewayHandle
    client: ProtoClient
    fake: FakeLLM
    kind: str

    @property
    def path(self) -> str:
        return PATHS[self.kind]

    def bodies(self) -> list[Any]:
        return self.fake.bodies(self.path)

    async def send(self, message: str, session: str = "main", **extra: Any) -> str:
        run_id = str(uuid.uuid4())
        res = await self.client.request(
            "chat.send",
            {"sessionKey": session, "message": message, "idempotencyKey": run_id, **extra},
        )
        assert res["ok"], res
        return run_id

    async def events(self, run_id: str, timeout: float = 20) -> list[dict[str, Any]]:
        """The run's chat events, up to and including its final/error/aborted one."""
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for frame in list(self.client.events):
                if frame["event"] == "chat" and frame["payload"]["runId"] == run_id:
                    self.client.events.remove(frame)
                    out.append(frame["payload"])
                    if frame["payload"]["state"] in ("final", "error", "aborted"):
                        return out
            await self.client.recv(max(0.1, deadline - loop.time()))

    async def turn(self, message: str, session: str = "main", **extra: Any) -> dict[str, Any]:
        """Send and wait for the end; returns the last chat event."""
        return (await self.events(await self.send(message, session, **extra)))[-1]


async def start_chat(
    start_gateway: StartGateway,
    make_client: MakeClient,
    fake: FakeLLM,
    kind: str,
    extra: str = "",
    **kwargs: Any,
) -> Chat:
    handle = await start_gateway(
        agent_config(kind, fake, extra), env={"FAKE_LLM_KEY": "fake-key-0123456789"}, **kwargs
    )
    client = make_client(handle.url)
    res = await client.connect(
        token=handle.token, scopes=["operator.read", "operator.write", "operator.admin"]
    )
    assert res["ok"], res
    return Chat(handle, client, fake, kind)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_reply_streams(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(Turn(text="Hello there, how can I help you today?", chunks=8, delay_s=0.05))
    run_id = await chat.send("hi")
    events = await chat.events(run_id)
    deltas = [e for e in events if e["state"] == "delta"]
    final = events[-1]
    assert final["state"] == "final"
    assert final["message"]["content"][0]["text"] == "Hello there, how can I help you today?"
    assert len(deltas) >= 2, "the reply arrives in pieces"
    assert "".join(d["deltaText"] for d in deltas) == final["message"]["content"][0]["text"]
    assert deltas[-1]["message"]["content"][0]["text"] == final["message"]["content"][0]["text"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    history = await chat.client.call("chat.history", {"sessionKey": "main"})
    roles = [m["role"] for m in history["messages"]]
    assert roles == ["user", "assistant"]
    assert history["sessionKey"] == "agent:main:main"
    body = chat.bodies()[-1]
    assert body["model"] == "fake-model-1"
    assert body["stream"] is True
    assert "Moltis Desktop" in system_text(body)  # the system prompt went along


@pytest.mark.parametrize("kind", KINDS)
async def test_the_model_is_offered_the_plugins_tools_that_can_work_here(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    await chat.turn("which tools do you have?")
    tools = chat.bodies()[-1]["tools"]
    names = sorted(t["name"] if kind == "anthropic" else t["function"]["name"] for t in tools)
    # The built-in plugin registers `canvas` too, but a headless gateway has no canvas (the
    # desktop app provides one: tests/test_desktop.py drives the tool there).
    assert names == ["current_time", "sessions_history", "sessions_list", "sessions_send"]
    agent = chat.gw.runtime.agent
    assert agent is not None
    assert agent.chat.tools.origins["canvas"] == "moltis_desktop.tools.builtin"
    provided = agent.plugins.provided
    assert ("moltis_desktop.tools.builtin", "tool", "current_time") in provided
    assert ("moltis_desktop.providers.builtin", "provider", "openai") in provided


@pytest.mark.parametrize("kind", KINDS)
async def test_three_tool_calls_two_in_parallel(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(
        Turn(tool_calls=[("current_time", {})]),
        Turn(
            tool_calls=[
                ("sessions_list", {"limit": 5}),
                ("current_time", {"timezone": "Europe/Paris"}),
            ]
        ),
        Turn(text="It is late; you have one session."),
    )
    run_id = await chat.send("what time is it, and what sessions do I have?")
    events = await chat.events(run_id)
    assert events[-1]["state"] == "final"
    assert events[-1]["message"]["content"][0]["text"] == "It is late; you have one session."
    tool_events = [
        f["payload"]
        for f in chat.client.events
        if f["event"] == "agent" and f["payload"]["stream"] == "tool"
    ]
    starts = [e["data"]["name"] for e in tool_events if e["data"]["phase"] == "start"]
    results = [e["data"] for e in tool_events if e["data"]["phase"] == "result"]
    assert starts == ["current_time", "sessions_list", "current_time"]
    assert all(not r["isError"] for r in results), results
    first, listed, paris = (json.loads(r["result"]) for r in results)
    assert (first["timezone"], paris["timezone"]) == ("UTC", "Europe/Paris")
    assert [s["key"] for s in listed] == ["agent:main:main"]
    bodies = chat.bodies()
    assert len(bodies) == 3
    # The second model call saw the first tool's result; the third saw both parallel ones.
    assert "iso" in json.dumps(bodies[1]["messages"][-1])
    last = json.dumps(bodies[2]["messages"][-2:])
    assert "agent:main:main" in last  # sessions_list's result
    assert "Europe/Paris" in last  # the parallel current_time's result
    history = await chat.client.call("chat.history", {"sessionKey": "main"})
    roles = [m["role"] for m in history["messages"]]
    assert roles == [
        "user",
        "assistant",
        "toolResult",
        "assistant",
        "toolResult",
        "toolResult",
        "assistant",
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_abort_mid_stream(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(
        Turn(
            text="This answer will never finish because it hangs",
            chunks=10,
            delay_s=0.02,
            hang=True,
        )
    )
    run_id = await chat.send("tell me a long story")
    await asyncio.wait_for(fake.hanging.wait(), 10)
    res = await chat.client.call("chat.abort", {"sessionKey": "main"})
    assert res == {"ok": True, "aborted": True, "runIds": [run_id]}
    events = await chat.events(run_id)
    assert events[-1]["state"] == "aborted"
    await asyncio.wait_for(fake.disconnected.wait(), 10)  # the provider stream was closed
    history = await chat.client.call("chat.history", {"sessionKey": "main"})
    last = history["messages"][-1]
    assert last["role"] == "assistant"
    assert last["stopReason"] == "aborted"
    assert last["content"][0]["text"].startswith("This")  # what had streamed is kept
    # The session goes on.
    fake.script(Turn(text="ready again"))
    assert (await chat.turn("hello?"))["message"]["content"][0]["text"] == "ready again"


@pytest.mark.parametrize("kind", KINDS)
async def test_provider_error(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(Turn(error=(500, {})), Turn(error=(401, {})))
    final = await chat.turn("hi")
    assert final["state"] == "error"
    assert final["errorMessage"] == (
        "fake failed with a server error (500): fake error 500. "
        "Try again later, or configure a fallback model"
    )
    final = await chat.turn("hi again")
    assert final["state"] == "error"
    assert final["errorMessage"].startswith("fake rejected the API key (401): check ")


@pytest.mark.parametrize("kind", KINDS)
async def test_fallback_model_after_a_retryable_error(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(
        start_gateway,
        make_client,
        fake,
        kind,
        overrides={"agents": {"fallbacks": ["fake/fake-model-2"]}},
    )
    fake.script(Turn(error=(503, {})), Turn(text="from the fallback"))
    final = await chat.turn("hi")
    assert final["state"] == "final"
    assert final["message"]["content"][0]["text"] == "from the fallback"
    assert [b["model"] for b in chat.bodies()] == ["fake-model-1", "fake-model-2"]


@pytest.mark.parametrize("kind", KINDS)
async def test_iteration_cap(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(
        start_gateway, make_client, fake, kind, overrides={"agents": {"max_iterations": 3}}
    )
    fake.script(*[Turn(tool_calls=[("current_time", {})]) for _ in range(5)])
    final = await chat.turn("loop forever")
    assert final["state"] == "error"
    assert "stopped after 3 model calls" in final["errorMessage"]
    assert len(chat.bodies()) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_two_sends_on_one_session_are_serialised(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(Turn(text="first answer", chunks=5, delay_s=0.05), Turn(text="second answer"))
    first = await chat.send("first question")
    second = await chat.send("second question")
    events = await chat.events(first)
    assert events[-1]["message"]["content"][0]["text"] == "first answer"
    events = await chat.events(second)
    assert events[-1]["message"]["content"][0]["text"] == "second answer"
    bodies = chat.bodies()
    # The second call began after the first had finished: it carries the first answer.
    assert message_texts(bodies[1], "assistant") == ["first answer"]
    assert message_texts(bodies[1])[-1] == "second question"


@pytest.mark.parametrize("kind", KINDS)
async def test_history_survives_a_restart(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM, tmp_path: Any
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(Turn(text="I will remember the number 42."))
    await chat.turn("remember 42")
    home = chat.gw.home
    await chat.client.close()
    await chat.gw.runtime.stop()
    from moltis_desktop.runtime import Runtime

    runtime = Runtime(
        env={
            "MOLTIS_HOME": str(home),
            "MOLTIS_TOKEN": chat.gw.token,
            "FAKE_LLM_KEY": "fake-key-0123456789",
        },
        overrides={"gateway": {"port": 0}},
        console=None,
        prompt=None,
    )
    gateway = await runtime.start()
    await runtime.agent_ready()
    try:
        client = make_client(gateway.url)
        await client.connect(token=chat.gw.token, scopes=["operator.admin"])
        history = await client.call("chat.history", {"sessionKey": "main"})
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        again = Chat(chat.gw, client, fake, kind)
        fake.script(Turn(text="You said 42."))
        await again.turn("what number?")
        assert message_texts(again.bodies()[-1], "assistant") == ["I will remember the number 42."]
    finally:
        await runtime.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_compaction_with_a_small_context_window(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    extra = """
[[models.catalog]]
id = "fake-model-1"
provider = "fake"
context_window = 1500

[session]
compaction_reserve_tokens = 400
compaction_keep_recent_tokens = 150
"""
    chat = await start_chat(start_gateway, make_client, fake, kind, extra)
    padding = "lorem ipsum dolor sit amet " * 40
    for i in range(4):
        fake.script(Turn(text=f"answer {i} " + padding[:600]))
        assert (await chat.turn(f"question {i} {padding}"))["state"] == "final"
    summaries = [b for b in chat.bodies() if "Summarise this conversation" in json.dumps(b)]
    assert summaries, "a summary was requested from the model"
    history = await chat.client.call("chat.history", {"sessionKey": "main"})
    assert any(m.get("compaction") for m in history["messages"])
    entry = (await chat.client.call("sessions.list"))["sessions"][0]
    assert entry["compactionCount"] >= 1
    # After compaction the model gets the summary, not the whole past.
    last = chat.bodies()[-1]
    assert "Summary of the earlier conversation" in json.dumps(last)
    assert "question 0" not in json.dumps(last["messages"])


async def test_every_run_reaches_the_hub_whoever_started_it(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    """The run manager publishes every run's events to its observers once (a failing
    observer harms nothing), and `agent.ask` is the same path as the WebSocket's chat."""
    from moltis_desktop.agent.ask import ask

    chat = await start_chat(start_gateway, make_client, fake, "openai")
    agent = chat.gw.runtime.agent
    assert agent is not None
    seen: list[tuple[str, str]] = []

    def broken(ref: Any, event: Any) -> None:
        raise RuntimeError("an observer's bug")

    unsubscribe_broken = agent.chat.runs.subscribe(broken)
    unsubscribe = agent.chat.runs.subscribe(
        lambda ref, e: seen.append((ref.run_id, type(e).__name__))
    )
    fake.script(Turn(text="typed answer"), Turn(text="asked answer"))
    typed_run = await chat.send("typed question")
    final = (await chat.events(typed_run))[-1]
    assert (final["state"], final["message"]["content"][0]["text"]) == ("final", "typed answer")
    reply = await ask(agent.chat, "asked question", session_key="main", timeout_s=20)
    assert (reply.status, reply.text, reply.session_key) == (
        "ok",
        "asked answer",
        "agent:main:main",
    )
    # Clients see the asked turn stream too, through the same bridge.
    asked = await chat.events(reply.run_id)
    assert asked[-1]["message"]["content"][0]["text"] == "asked answer"
    command = await ask(agent.chat, "/status")
    assert command.status == "ok" and command.stop_reason == "command"
    assert "Session: agent:main:main" in command.text
    for run_id in (typed_run, reply.run_id):
        kinds = [kind for rid, kind in seen if rid == run_id]
        assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished", kinds
        assert kinds.count("RunFinished") == 1
    assert (command.run_id, "DirectReply") in seen
    # Watching a run that has already ended gives its outcome, and then the end.
    finished = agent.chat.runs.get(typed_run)
    assert finished is not None
    late = finished.watch()
    outcome = await asyncio.wait_for(late.next(), 5)
    assert type(outcome).__name__ == "RunFinished" and outcome.text == "typed answer"
    assert await asyncio.wait_for(late.next(), 5) is None
    unsubscribe()
    unsubscribe_broken()
    count = len(seen)
    fake.script(Turn(text="unobserved"))
    await chat.turn("after unsubscribing")
    assert len(seen) == count


async def test_typed_commands_announce_session_changes_to_other_clients(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    """`/reset`, `/new`, `/think` and `/model` typed in one client change the session's
    entry; every other client hears `sessions.changed`, as a `sessions.*` method would
    make them (docs/PROTOCOL.md), whoever made the change."""
    chat = await start_chat(start_gateway, make_client, fake, "openai")
    await chat.turn("hello")  # the session exists, with a message
    watcher = make_client(chat.gw.url)
    res = await watcher.connect(token=chat.gw.token, scopes=["operator.read"])
    assert res["ok"], res

    async def announced() -> tuple[str, str]:
        payload = (await watcher.next_event("sessions.changed", timeout=10))["payload"]
        return payload["sessionKey"], payload["reason"]

    await chat.turn("/reset")
    assert await announced() == ("agent:main:main", "reset")
    await chat.turn("/think high")
    assert await announced() == ("agent:main:main", "patch")
    await chat.turn("/model fake/fake-model-2")
    assert await announced() == ("agent:main:main", "patch")
    await chat.turn("/new", session="agent:main:other")
    assert await announced() == ("agent:main:other", "reset")
    # A plain message changes no settings: nothing more is announced (a request's answer
    # comes after every event sent before it, so the watcher has read them all).
    await chat.turn("and now?")
    await watcher.call("health")
    assert not [f for f in watcher.events if f["event"] == "sessions.changed"]


@pytest.mark.parametrize("kind", KINDS)
async def test_directives_and_commands(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    # /think alone persists; the next turn asks for reasoning.
    reply = await chat.turn("/think high")
    assert reply["message"]["content"][0]["text"] == "Thinking level set to high."
    assert not chat.bodies(), "a directive-only message does not call the model"
    await chat.turn("solve it")
    body = chat.bodies()[-1]
    if kind == "anthropic":
        assert body["thinking"]["type"] in ("enabled", "adaptive")
    assert "/think" not in json.dumps(body["messages"])
    # #think inline is a one-off: it is stripped and does not stick.
    await chat.turn("#think off just this once")
    assert message_texts(chat.bodies()[-1])[-1] == "just this once"
    # /model switches the session's model; /verbose and /exec persist.
    reply = await chat.turn("/model fake/fake-model-2")
    assert "fake/fake-model-2" in reply["message"]["content"][0]["text"]
    await chat.turn("and now?")
    assert chat.bodies()[-1]["model"] == "fake-model-2"
    await chat.turn("/verbose on")
    await chat.turn("#exec host=gateway ask=always")
    listed = (await chat.client.call("sessions.list"))["sessions"][0]
    assert listed["thinkingLevel"] == "high"
    assert listed["verboseLevel"] == "on"
    assert listed["modelOverride"] == "fake/fake-model-2"
    assert listed["execHost"] == "gateway"
    # /status and /usage answer without the model.
    calls = len(chat.bodies())
    status = (await chat.turn("/status"))["message"]["content"][0]["text"]
    assert "Model: fake/fake-model-2" in status
    assert "Thinking: high" in status
    usage = (await chat.turn("/usage"))["message"]["content"][0]["text"]
    assert "fake/fake-model-2" in usage
    assert "/think" in (await chat.turn("/help"))["message"]["content"][0]["text"]
    assert len(chat.bodies()) == calls
    # /new with a model starts over; /reset starts over; the old transcript is archived.
    old_id = listed["sessionId"]
    reply = await chat.turn("/new fake/fake-model-1")
    assert "new session" in reply["message"]["content"][0]["text"]
    listed = (await chat.client.call("sessions.list"))["sessions"][0]
    assert listed["sessionId"] != old_id
    assert listed["modelOverride"] == "fake/fake-model-1"
    archived = list(chat.gw.home.glob(f"state/agents/main/sessions/{old_id}.jsonl.*"))
    assert archived, "the old transcript is archived"
    history = await chat.client.call("chat.history", {"sessionKey": "main"})
    assert history["messages"] == []
    await chat.turn("/reset")
    assert (await chat.client.call("sessions.list"))["sessions"][0]["sessionId"] != listed[
        "sessionId"
    ]
    # /stop when nothing runs; a bad directive explains itself.
    assert (await chat.turn("/stop"))["message"]["content"][0]["text"] == "Nothing to stop."
    assert (
        "/think takes one of" in (await chat.turn("/think loudly"))["message"]["content"][0]["text"]
    )
    # /compact on a short session.
    fake.script(Turn(text="one"), Turn(text="two"), Turn(text="the summary"))
    await chat.turn("first")
    await chat.turn("second")
    compact = (await chat.turn("/compact"))["message"]["content"][0]["text"]
    assert compact.startswith("Compacted")


@pytest.mark.parametrize("kind", KINDS)
async def test_usage_totals_match_the_provider(
    kind: str, start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, kind)
    fake.script(
        Turn(tool_calls=[("current_time", {})], usage=Usage(100, 20, 30, 40)),
        Turn(text="done", usage=Usage(150, 25, 60, 0)),
        Turn(text="again", usage=Usage(7, 3, 0, 11)),
    )
    assert (await chat.turn("time?"))["state"] == "final"
    final = await chat.turn("once more")
    assert final["usage"] == {
        "input": 7,
        "output": 3,
        "cacheRead": 0,
        "cacheWrite": 11,
        "totalTokens": 21,
    }
    cost = await chat.client.call("usage.cost", {"days": 1})
    totals = cost["totals"]
    assert (totals["input"], totals["output"], totals["cacheRead"], totals["cacheWrite"]) == (
        257,
        48,
        90,
        51,
    )
    assert totals["calls"] == 3
    entry = (await chat.client.call("sessions.list"))["sessions"][0]
    assert (
        entry["inputTokens"],
        entry["outputTokens"],
        entry["cacheReadTokens"],
        entry["cacheWriteTokens"],
    ) == (257, 48, 90, 51)
    status = await chat.client.call("usage.status")
    assert status["today"]["totalTokens"] == 257 + 48 + 90 + 51


async def test_agent_method_answers_twice(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, "anthropic")
    fake.script(Turn(text="the agent's reply"))
    rid = await chat.client.send_request("agent", {"message": "hi", "idempotencyKey": "run-1"})
    accepted = await chat.client.response(rid)
    assert accepted["payload"]["status"] == "accepted"
    assert accepted["payload"]["sessionKey"] == "agent:main:main"
    final = await chat.client.response(rid)
    assert final["payload"]["status"] == "ok"
    assert final["payload"]["result"]["payloads"] == [{"text": "the agent's reply"}]
    # A retry of the same run gets the recorded answer, not a second run.
    again = await chat.client.request("agent", {"message": "hi", "idempotencyKey": "run-1"})
    assert again["payload"]["result"]["payloads"] == [{"text": "the agent's reply"}]
    assert len(chat.bodies()) == 1
    waited = await chat.client.call("agent.wait", {"runId": "run-1", "timeoutMs": 1000})
    assert waited["status"] == "ok"
    identity = await chat.client.call("agent.identity.get", {})
    assert identity["agentId"] == "main"


async def test_sessions_methods(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, "openai")
    fake.script(Turn(text="one"), Turn(text="two"))
    await chat.turn("hello", session="main")
    await chat.turn("hi", session="agent:main:dm:alice")
    listed = await chat.client.call("sessions.list")
    keys = {s["key"] for s in listed["sessions"]}
    assert keys == {"agent:main:main", "agent:main:dm:alice"}
    health = await chat.client.call("health", {"probe": True})  # probe: not the cached one
    index = chat.gw.home / "state" / "agents" / "main" / "sessions" / "sessions.json"
    assert index.is_file()
    for block in (health["sessions"], health["agents"][0]["sessions"]):
        assert block["path"] == str(index)
        assert block["count"] == 2
        assert [r["key"] for r in block["recent"]] == ["agent:main:dm:alice", "agent:main:main"]
        assert all(r["age"] >= 0 and r["updatedAt"] > 0 for r in block["recent"])
    preview = await chat.client.call("sessions.preview", {"keys": ["agent:main:dm:alice"]})
    assert [i["text"] for i in preview["previews"][0]["items"]] == ["hi", "two"]
    patched = await chat.client.call(
        "sessions.patch", {"key": "agent:main:dm:alice", "label": "Alice"}
    )
    assert patched["entry"]["label"] == "Alice"
    refused = await chat.client.request("sessions.patch", {"key": "main", "sessionId": "x"})
    assert "cannot change 'sessionId'" in refused["error"]["message"]
    before = patched["entry"]["sessionId"]
    reset = await chat.client.call("sessions.reset", {"key": "agent:main:dm:alice"})
    assert reset["sessionId"] != before
    sessions = index.parent
    assert list(sessions.glob(f"{before}.jsonl.reset.*"))  # archived, not lost
    deleted = await chat.client.call("sessions.delete", {"key": "agent:main:dm:alice"})
    assert deleted["deleted"] is True
    (archived,) = deleted["archived"]
    assert archived == str(sessions / f"{reset['sessionId']}.jsonl")
    assert list(sessions.glob(f"{reset['sessionId']}.jsonl.deleted.*"))
    keys = {s["key"] for s in (await chat.client.call("sessions.list"))["sessions"]}
    assert keys == {"agent:main:main"}
    sent = await chat.client.call(
        "send", {"to": "main", "message": "a note for you", "idempotencyKey": "send-1"}
    )
    assert sent["channel"] == "session"
    history = await chat.client.call("chat.history", {"sessionKey": "main"})
    assert history["messages"][-1]["content"][0]["text"] == "a note for you"
    refused = await chat.client.request(
        "send", {"to": "123", "channel": "telegram", "message": "x", "idempotencyKey": "send-2"}
    )
    assert "not configured" in refused["error"]["message"]


async def test_models_list_comes_from_the_provider(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, "openai")
    models = await chat.client.call("models.list", {"refresh": True})
    ids = {(m["provider"], m["id"]) for m in models["models"]}
    assert {("fake", "fake-model-1"), ("fake", "fake-model-2")} <= ids
    assert fake.count("/v1/models") >= 1


async def test_user_errors_answer_as_invalid_requests(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    # Whichever method meets an unknown agent, the answer says so; never "internal error".
    chat = await start_chat(start_gateway, make_client, fake, "openai")
    calls = [
        ("chat.send", {"sessionKey": "main", "message": "hi", "idempotencyKey": "u-1"}),
        ("chat.abort", {"sessionKey": "main"}),
        ("chat.history", {"sessionKey": "main"}),
        ("chat.inject", {"sessionKey": "main", "message": "note"}),
        ("sessions.list", {}),
        ("sessions.reset", {"key": "main"}),
        ("agent.identity.get", {}),
    ]
    for method, params in calls:
        refused = await chat.client.request(method, {**params, "agentId": "ghost"})
        assert refused["error"] == {
            "code": "INVALID_REQUEST",
            "message": "unknown agent 'ghost'; configured agents: main",
        }, method


async def test_stopping_closes_every_provider_connection(
    start_gateway: StartGateway, make_client: MakeClient, fake: FakeLLM
) -> None:
    chat = await start_chat(start_gateway, make_client, fake, "openai")
    runtime = chat.gw.runtime
    fake.script(Turn(text="one"), Turn(text="two"))

    async def used_client() -> Any:
        await chat.turn("hi")
        assert runtime.services is not None and runtime.services.agent is not None
        return await runtime.services.agent.models.registry.get("fake").client()

    first = await used_client()
    # A provider change swaps the registry; the old one's clients close at stop (not at
    # once: a reply may still be streaming through them).
    current = await chat.client.call("config.get")
    await chat.client.call(
        "config.patch",
        {"raw": '{"providers": {"fake": {"timeout_s": 30}}}', "baseHash": current["hash"]},
    )
    second = await used_client()
    assert second is not first
    assert not first.is_closed() and not second.is_closed()
    await runtime.stop()
    assert first.is_closed() and second.is_closed()
