"""The agent's parts on their own: directives, the tool registry, prompts, routing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moltis_desktop.agent.directives import Directive, parse
from moltis_desktop.agent.prompt import PromptContext, build_system_prompt, find_skills
from moltis_desktop.agent.routing import Inbound, route
from moltis_desktop.agent.tools import ToolContext, ToolError, ToolRegistry, tool
from moltis_desktop.config.loader import to_settings
from moltis_desktop.providers.base import ToolCall


@pytest.mark.parametrize(
    ("message", "text", "directives", "commands"),
    [
        ("/think high", "", [("think", "high")], []),
        ("hello /think: low world", "hello world", [("think", "low")], []),
        ("#think xhigh what is 2+2", "what is 2+2", [("think", "xhigh")], []),
        ("/t", "", [("think", "medium")], []),
        ("/verbose", "", [("verbose", "on")], []),
        ("/model openai/gpt-4.1 and go", "and go", [("model", "openai/gpt-4.1")], []),
        ("/new anthropic/claude-haiku-4-5", "", [], [("new", "anthropic/claude-haiku-4-5")]),
        ("/compact keep the names", "", [], [("compact", "keep the names")]),
        ("#reset", "", [], [("reset", "")]),
        ("/status /usage cost", "", [], [("status", ""), ("usage", "cost")]),
        ("#exec host=gateway ask=always", "", [("exec", "host=gateway ask=always")], []),
        ("tell me about #python and /etc/hosts", "tell me about #python and /etc/hosts", [], []),
        ("http://example.com/think there", "http://example.com/think there", [], []),
    ],
)
def test_directive_parsing(
    message: str, text: str, directives: list[tuple[str, str]], commands: list[tuple[str, str]]
) -> None:
    parsed = parse(message)
    assert parsed.text == text
    assert list(parsed.directives) == [Directive(n, v) for n, v in directives]
    assert list(parsed.commands) == [Directive(n, v) for n, v in commands]
    assert parsed.errors == ()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("/think loudly", "/think takes one of"),
        ("/verbose maybe", "/verbose takes on, full or off"),
        ("/model", "/model takes a model"),
        ("/exec host=moon", "/exec host= takes sandbox, gateway, node"),
        ("/usage lots", "/usage takes off, tokens, full or cost"),
    ],
)
def test_bad_directives_say_what_they_take(message: str, error: str) -> None:
    parsed = parse(message)
    assert parsed.errors
    assert parsed.errors[0].startswith(error)


@tool()
async def slow(ctx: ToolContext, seconds: float = 1.0) -> str:
    """Sleeps."""
    await asyncio.sleep(seconds)
    return "done"


@tool()
async def big(ctx: ToolContext, size: int) -> str:
    """Returns a long text."""
    return "x" * size


@tool()
async def broken(ctx: ToolContext) -> str:
    """Fails."""
    raise ToolError("the disk is full")


@tool()
async def crashing(ctx: ToolContext) -> str:
    """Crashes."""
    raise RuntimeError("boom")


async def test_tool_registry_runs_with_limits() -> None:
    registry = ToolRegistry([slow, big, broken, crashing])
    ctx = ToolContext("main", "agent:main:main", "run-1")

    async def call(name: str, args: dict[str, object], **kw: object) -> tuple[str, bool]:
        result = await registry.run(
            ToolCall("c1", name, args),
            ctx,
            timeout_s=kw.pop("timeout_s", 5.0),  # type: ignore[arg-type]
            max_chars=kw.pop("max_chars", 100),  # type: ignore[arg-type]
            **kw,
        )  # type: ignore[arg-type]
        return result.content, result.is_error

    assert await call("slow", {"seconds": 0}) == ("done", False)
    text, error = await call("slow", {"seconds": 5}, timeout_s=0.05)
    assert error
    assert "did not finish within 0.05 s" in text
    text, error = await call("big", {"size": 1000})
    assert not error
    assert text.startswith("x" * 100)
    assert "900 more characters cut" in text
    assert await call("broken", {}) == ("error: the disk is full", True)
    text, error = await call("crashing", {})
    assert error
    assert "RuntimeError: boom" in text
    text, error = await call("big", {"size": "lots"})
    assert error
    assert "invalid arguments" in text
    text, error = await call("big", {"size": 1, "extra": True})
    assert error
    text, error = await call("nope", {})
    assert error
    assert "no tool named 'nope'" in text
    text, error = await call("big", {"size": 1}, deny=("big",))
    assert error


def test_tool_schemas_come_from_type_hints() -> None:
    registry = ToolRegistry([slow, big])
    specs = {s.name: s for s in registry.specs()}
    assert specs["big"].parameters["required"] == ["size"]
    assert specs["big"].parameters["properties"]["size"]["type"] == "integer"
    assert specs["slow"].parameters["properties"]["seconds"]["default"] == 1.0
    assert specs["slow"].description == "Sleeps."
    assert [s.name for s in registry.specs(allow=("s*",))] == ["slow"]


def test_system_prompt_reads_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "skills" / "weather").mkdir(parents=True)
    (workspace / "SOUL.md").write_text("You love puns.")
    (workspace / "USER.md").write_text("The user is called Ada.")
    (workspace / "skills" / "weather" / "SKILL.md").write_text(
        "---\nname: weather\ndescription: Look up the forecast\n---\nSteps..."
    )
    extra_skills = tmp_path / "more"
    (extra_skills / "notes").mkdir(parents=True)
    (extra_skills / "notes" / "SKILL.md").write_text("no front matter")
    prompt = build_system_prompt(
        PromptContext(
            agent_id="main",
            agent_name="Molty",
            workspace=workspace,
            skills_dirs=(extra_skills,),
            channel="telegram",
            chat_type="direct",
            extra="Answer in French.",
        )
    )
    assert "You are Molty" in prompt
    assert "## SOUL.md\nYou love puns." in prompt
    assert "The user is called Ada." in prompt
    assert "- weather: Look up the forecast" in prompt
    assert "- notes: (no description)" in prompt
    assert "over telegram (direct chat)" in prompt
    assert prompt.endswith("Answer in French.")
    assert [s.name for s in find_skills([workspace / "skills", extra_skills])] == [
        "weather",
        "notes",
    ]


def test_routing_cascade() -> None:
    settings = to_settings(
        {
            "agents": {"list": [{"id": "main"}, {"id": "work"}, {"id": "family"}, {"id": "ops"}]},
            "bindings": [
                {"agent": "work", "channel": "slack"},
                {"agent": "ops", "channel": "slack", "team": "T-ops"},
                {"agent": "family", "channel": "telegram", "peer": "mum"},
                {"agent": "ghost", "channel": "telegram"},  # unknown agents are skipped
            ],
        }
    )
    assert route(settings, Inbound(channel="slack", team="T-1")) == "work"
    assert route(settings, Inbound(channel="slack", team="T-ops")) == "ops"
    assert route(settings, Inbound(channel="telegram", peer="mum")) == "family"
    assert route(settings, Inbound(channel="telegram", peer="bob")) == "main"
    assert route(settings, Inbound()) == "main"


def test_unanswered_tool_calls_get_an_interrupted_result() -> None:
    from moltis_desktop.agent.transcript import INTERRUPTED, to_messages
    from moltis_desktop.providers.base import ToolResult

    call = {"type": "toolCall", "id": "c1", "name": "slow", "arguments": {}}
    call2 = {"type": "toolCall", "id": "c2", "name": "fast", "arguments": {}}
    entries = [
        {
            "type": "message",
            "message": {"role": "user", "content": [{"type": "text", "text": "go"}]},
        },
        {"type": "message", "message": {"role": "assistant", "content": [call, call2]}},
        {
            "type": "message",
            "message": {
                "role": "toolResult",
                "toolCallId": "c2",
                "toolName": "fast",
                "isError": False,
                "content": [{"type": "text", "text": "ok"}],
            },
        },
        # the gateway died here; the next turn begins
        {
            "type": "message",
            "message": {"role": "user", "content": [{"type": "text", "text": "again"}]},
        },
    ]
    messages = to_messages(entries)
    assert [m.role for m in messages] == ["user", "assistant", "user", "user"]
    results = [p for p in messages[2].parts if isinstance(p, ToolResult)]
    assert [(r.call_id, r.is_error) for r in results] == [("c2", False), ("c1", True)]
    assert (
        results[1].content
        == INTERRUPTED
        == (
            "error: this tool call was interrupted (the reply was stopped or the gateway "
            "restarted) and has no result"
        )
    )
    assert messages[3].text == "again"
