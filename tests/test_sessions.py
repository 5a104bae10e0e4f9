"""Sessions: keys, the index and transcripts on disk, resets, compaction windows, previews,
two processes at once, recovery from a corrupt index, the usage ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from moltis_desktop.config.settings import SessionResetSettings, SessionSettings
from moltis_desktop.core.clock import ManualClock
from moltis_desktop.sessions.entry import SessionError
from moltis_desktop.sessions.keys import (
    SessionKey,
    SessionKeyError,
    agent_id_of,
    channel_session_key,
    cron_session_key,
    dm_session_key,
    group_session_key,
    hook_session_key,
    main_session_key,
    normalize_agent_id,
    normalize_session_key,
    parse_session_key,
)
from moltis_desktop.sessions.policy import daily_boundary_ms, needs_reset
from moltis_desktop.sessions.store import PREVIEW_WINDOW_BYTES, SessionStore
from moltis_desktop.sessions.usage import UsageLedger, normalize_usage

# ManualClock's default start, 2027-01-15 08:00:00 UTC.
START_MS = ManualClock().now_ms()


def user(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    }


def assistant(text: str, *calls: tuple[str, str]) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [
        {"type": "toolCall", "id": cid, "name": name, "arguments": {}} for cid, name in calls
    ]
    return {
        "type": "message",
        "message": {"role": "assistant", "content": content, "model": "m", "provider": "p"},
    }


def tool_result(call_id: str, text: str) -> dict[str, Any]:
    message = {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": "t",
        "isError": False,
        "content": [{"type": "text", "text": text}],
    }
    return {"type": "message", "message": message}


def texts(entries: list[dict[str, Any]]) -> list[str]:
    out = []
    for entry in entries:
        if entry["type"] == "compaction":
            out.append(f"summary:{entry['summary']}")
        else:
            blocks = entry["message"]["content"]
            out.append("".join(b.get("text", "") for b in blocks if b["type"] == "text"))
    return out


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> SessionStore:
    return SessionStore(tmp_path / "state", clock=clock, tz=UTC)


# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "kind", "agent", "chat_type"),
    [
        ("agent:main:main", "main", "main", "direct"),
        ("agent:work:home", "main", "work", "direct"),
        ("agent:main:dm:U123", "dm", "main", "direct"),
        ("agent:main:telegram:dm:123456", "dm", "main", "direct"),
        ("agent:main:telegram:default:dm:123456", "dm", "main", "direct"),
        ("agent:ops:whatsapp:biz:dm:+15551234@s.whatsapp.net", "dm", "ops", "direct"),
        ("agent:main:telegram:group:-1001234", "group", "main", "group"),
        ("agent:main:telegram:group:-1001234:topic:42", "group", "main", "group"),
        ("agent:main:discord:channel:98765", "channel", "main", "room"),
        ("agent:main:matrix:room:!AbCd:matrix.org", "room", "main", "room"),
        ("agent:main:group:legacy", "group", "main", "group"),
        ("agent:main:subagent:abc-123", "other", "main", None),
        ("agent:main:cron:nightly", "cron", "main", None),
        ("cron:nightly", "cron", "main", None),
        ("hook:0b6f4c1e-4d3a-4c59-9a2b-6f0e8f1d2c3b", "hook", "main", None),
    ],
)
def test_canonical_keys_round_trip(key: str, kind: str, agent: str, chat_type: str | None) -> None:
    parsed = parse_session_key(key)
    assert str(parsed) == key
    assert parsed.kind == kind
    assert parsed.chat_type == chat_type
    assert agent_id_of(key) == agent
    assert parse_session_key(str(parsed)) == parsed


def test_key_parts_and_case() -> None:
    parsed = parse_session_key("Agent:Work:Telegram:Biz:DM:PeerX")
    assert parsed == SessionKey("dm", "work", "PeerX", channel="telegram", account="biz")
    assert str(parsed) == "agent:work:telegram:biz:dm:PeerX"  # ids keep their case
    topic = parse_session_key("agent:main:telegram:group:-100:topic:7")
    assert (topic.id, topic.channel, topic.thread) == ("-100", "telegram", "7")
    assert parse_session_key("agent:main:matrix:channel:!a:b.org").id == "!a:b.org"
    assert parse_session_key("cron:job:1").id == "job:1"
    assert parse_session_key("cron:x").agent_id is None
    assert agent_id_of("cron:x", default_agent="ops") == "ops"


def test_short_forms() -> None:
    assert normalize_session_key("main") == "agent:main:main"
    assert normalize_session_key(" MAIN ") == "agent:main:main"
    assert normalize_session_key("main", default_agent="ops", main_key="home") == "agent:ops:home"
    assert normalize_session_key("telegram:group:5") == "agent:main:telegram:group:5"
    assert normalize_session_key("group:7", default_agent="ops") == "agent:ops:group:7"
    assert normalize_session_key("dm:u1") == "agent:main:dm:u1"
    assert normalize_session_key("scratch") == "agent:main:scratch"


def test_builders() -> None:
    assert main_session_key() == "agent:main:main"
    assert main_session_key("Work", "Home") == "agent:work:home"
    assert dm_session_key("main", "42", scope="main") == "agent:main:main"
    assert dm_session_key("main", "42", scope="main", main_key="home") == "agent:main:home"
    assert dm_session_key("main", "42", scope="per-peer") == "agent:main:dm:42"
    assert (
        dm_session_key("main", "42", scope="per-channel-peer", channel="Telegram")
        == "agent:main:telegram:dm:42"
    )
    assert (
        dm_session_key("main", "42", scope="per-account-channel-peer", channel="telegram")
        == "agent:main:telegram:default:dm:42"
    )
    assert (
        dm_session_key("a", "42", scope="per-account-channel-peer", channel="slack", account="T1")
        == "agent:a:slack:t1:dm:42"
    )
    assert group_session_key("main", "telegram", "-100") == "agent:main:telegram:group:-100"
    assert (
        group_session_key("main", "telegram", "-100", thread="9")
        == "agent:main:telegram:group:-100:topic:9"
    )
    assert channel_session_key("main", "discord", "1") == "agent:main:discord:channel:1"
    assert channel_session_key("main", "matrix", "!r", kind="room") == "agent:main:matrix:room:!r"
    assert cron_session_key("nightly") == "cron:nightly"
    assert hook_session_key("abc") == "hook:abc"
    assert parse_session_key(hook_session_key()).kind == "hook"
    assert normalize_agent_id(" Ops ") == "ops"
    with pytest.raises(SessionKeyError, match="needs the channel"):
        dm_session_key("main", "42", scope="per-channel-peer")
    with pytest.raises(SessionKeyError, match="invalid agent id"):
        normalize_agent_id("../etc")


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("agent:main", "must be followed"),
        ("agent:main:", "must be followed"),
        ("agent::main", "agent id"),
        ("agent:../x:main", "agent id"),
        ("agent:main:dm", "needs an id"),
        ("agent:main:telegram:dm", "needs an id"),
        ("agent:main:telegram:acct:dm", "needs an id"),
        ("agent:main:telegram:group", "needs an id"),
        ("agent:main:a::b", "empty segment"),
        ("agent:main:telegram:group:5:topic:", "empty segment"),
        ("agent:main:telegram:group::topic:5", "empty segment"),
        ("agent:main:tele gram:dm:1", "channel 'tele gram'"),
        ("agent:main:telegram:dm:a\tb", "whitespace"),
        ("agent:main:Tele/gram:dm:1", "channel"),
        ("cron:", "needs an id"),
        ("hook:", "needs an id"),
    ],
)
def test_malformed_keys_are_refused_clearly(key: str, why: str) -> None:
    with pytest.raises(SessionKeyError, match=why) as info:
        parse_session_key(key)
    assert "invalid session key" in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------- the store


def test_get_or_create_layout_and_header(store: SessionStore, tmp_path: Path) -> None:
    entry = store.get_or_create("main", cwd="/work/ws")
    assert entry.key == "agent:main:main"
    assert entry.agent_id == "main"
    assert entry.session_started_at == entry.updated_at == START_MS
    assert entry.chat_type == "direct"
    assert (entry.message_count, entry.total_tokens, entry.compaction_count) == (0, 0, 0)
    again = store.get_or_create("agent:main:main")
    assert again.session_id == entry.session_id
    directory = tmp_path / "state" / "agents" / "main" / "sessions"
    index = json.loads((directory / "sessions.json").read_text())
    assert index["agent:main:main"]["sessionId"] == entry.session_id
    lines = (directory / f"{entry.session_id}.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {
        "type": "session",
        "version": 1,
        "id": entry.session_id,
        "timestamp": "2027-01-15T08:00:00.000Z",
        "sessionKey": "agent:main:main",
        "cwd": "/work/ws",
    }
    assert oct((directory / "sessions.json").stat().st_mode & 0o777) == "0o600"
    assert store.entry("agent:main:nothing") is None
    assert store.transcript("agent:main:nothing") == []
    assert store.history("agent:main:nothing") == []


def test_sessions_of_other_agents_and_cron_keys(store: SessionStore, tmp_path: Path) -> None:
    store.append("agent:work:telegram:group:-5", user("hi"))
    store.append("cron:nightly", user("run"))
    assert (tmp_path / "state/agents/work/sessions/sessions.json").exists()
    main_index = json.loads((tmp_path / "state/agents/main/sessions/sessions.json").read_text())
    assert list(main_index) == ["cron:nightly"]
    entry = store.entry("agent:work:telegram:group:-5")
    assert entry is not None
    assert (entry.agent_id, entry.chat_type, entry.channel) == ("work", "group", "telegram")
    assert store.agent_ids() == ["main", "work"]


def test_append_assigns_ids_parents_timestamps_and_counts(
    store: SessionStore, clock: ManualClock
) -> None:
    first = store.append("main", user("hello"))
    clock.advance(2)
    ids = store.append_many(
        "main",
        [
            assistant("", ("c1", "read")),
            tool_result("c1", "file text"),
            assistant("done"),
            {"type": "custom", "customType": "note", "data": {"x": 1}},
        ],
    )
    given = store.append("main", {**user("with id"), "id": "mine", "timestamp": "t"})
    assert given == "mine"
    entries = store.transcript("main")
    assert entries[0]["type"] == "session"
    body = entries[1:]
    assert [e["id"] for e in body] == [first, *ids, "mine"]
    assert [e["parentId"] for e in body] == [None, first, *ids]
    assert body[0]["timestamp"] == "2027-01-15T08:00:00.000Z"
    assert body[1]["timestamp"] == "2027-01-15T08:00:02.000Z"
    assert body[-1]["timestamp"] == "t"
    assert list(body[1])[:4] == ["type", "id", "parentId", "timestamp"]
    assert body[2]["message"]["toolCallId"] == "c1"
    assert body[4] == {**body[4], "customType": "note", "data": {"x": 1}}
    entry = store.entry("main")
    assert entry is not None
    assert entry.message_count == 5  # the custom entry is not a message
    assert entry.last_interaction_at == START_MS + 2000
    assert len(set(e["id"] for e in body)) == len(body)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"type": "bogus"}, "unknown transcript entry type"),
        ({"type": "message"}, "needs `message"),
        ({"type": "message", "message": {"role": "system", "content": []}}, "role"),
        ({"type": "message", "message": {"role": "user", "content": 5}}, "content"),
        ({"type": "message", "message": {"role": "user", "content": ["x"]}}, "blocks"),
        ({"type": "message", "message": {"role": "toolResult", "content": []}}, "toolCallId"),
        ({"type": "compaction"}, "summary"),
        ({"type": "custom", "data": 1}, "customType"),
        ({**user("x"), "id": 5}, "id must be a string"),
        ({**user("x"), "blob": object()}, "plain JSON"),
    ],
)
def test_bad_entries_are_refused(store: SessionStore, entry: dict[str, Any], why: str) -> None:
    with pytest.raises(SessionError, match=why):
        store.append("main", entry)
    assert store.transcript("main") == []  # nothing was created for a refused entry


def test_patch_sets_and_clears_fields(store: SessionStore, clock: ManualClock) -> None:
    clock.advance(5)
    entry = store.patch("agent:main:dm:u1", label="Work", thinkingLevel="high", extra={"a": [1]})
    assert (entry.label, entry.thinking_level, entry.get("extra")) == ("Work", "high", {"a": [1]})
    assert entry.updated_at == START_MS + 5000
    entry = store.patch("agent:main:dm:u1", label=None, verboseLevel="on", modelOverride="gpt")
    assert entry.label is None
    assert "label" not in entry.fields
    assert (entry.verbose_level, entry.model_override, entry.thinking_level) == (
        "on",
        "gpt",
        "high",
    )
    reread = SessionStore(store.state_dir).entry("agent:main:dm:u1")
    assert reread is not None
    assert reread.fields == entry.fields
    with pytest.raises(SessionError, match="sessionId"):
        store.patch("main", sessionId="x")
    with pytest.raises(SessionError, match="plain JSON"):
        store.patch("main", label=object())
    assert entry.to_dict()["key"] == "agent:main:dm:u1"


def test_add_usage_counts_on_the_session_and_in_the_ledger(
    store: SessionStore, tmp_path: Path
) -> None:
    store.add_usage("main", "claude-x", "anthropic", {"input": 100, "output": 20, "cacheRead": 50})
    entry = store.add_usage("main", "claude-x", "anthropic", {"input": 10, "output": 5})
    assert (entry.input_tokens, entry.output_tokens, entry.cache_read_tokens) == (110, 25, 50)
    assert entry.total_tokens == 185
    assert entry.context_tokens == 15  # the last call's context
    assert (entry.get("model"), entry.get("modelProvider")) == ("claude-x", "anthropic")
    lines = (tmp_path / "state/usage/2027-01.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {
        "ts": START_MS,
        "agentId": "main",
        "sessionKey": "agent:main:main",
        "provider": "anthropic",
        "model": "claude-x",
        "input": 100,
        "output": 20,
        "cacheRead": 50,
        "cacheWrite": 0,
    }
    assert store.usage.session_totals("agent:main:main").total == 185
    with pytest.raises(SessionError, match="non-negative"):
        store.add_usage("main", "m", "p", {"input": -1})


def test_list_filters_and_order(store: SessionStore, clock: ManualClock) -> None:
    store.append("agent:main:telegram:dm:alice", user("a"))
    clock.advance(600)
    store.patch("agent:main:slack:group:G1", label="Team", displayName="Design crew")
    clock.advance(600)
    store.append("agent:ops:main", user("b"))
    keys = [e.key for e in store.list()]
    assert keys == ["agent:ops:main", "agent:main:slack:group:G1", "agent:main:telegram:dm:alice"]
    assert [e.key for e in store.list("main")] == keys[1:]
    assert [e.key for e in store.list(limit=1)] == keys[:1]
    assert [e.key for e in store.list(active_minutes=15)] == keys[:2]
    assert [e.key for e in store.list(search="DESIGN")] == [keys[1]]
    assert [e.key for e in store.list(search="alice")] == [keys[2]]
    assert [e.key for e in store.list(label="Team")] == [keys[1]]
    assert store.list(label="team") == []
    assert store.list("nobody") == []
    with pytest.raises(SessionKeyError):
        store.list("../up")


def test_reset_archives_and_keeps_overrides(store: SessionStore, clock: ManualClock) -> None:
    store.get_or_create("main", cwd="/ws")
    store.append("main", user("before"))
    store.add_usage("main", "m", "p", {"input": 5, "output": 5})
    store.patch("main", label="Mine", thinkingLevel="low")
    old = store.entry("main")
    assert old is not None
    directory = store.sessions_dir("main")
    clock.advance(60)
    new_id = store.reset("main")
    assert new_id != old.session_id
    entry = store.entry("main")
    assert entry is not None
    assert entry.session_id == new_id
    assert (entry.label, entry.thinking_level) == ("Mine", "low")
    assert (entry.message_count, entry.total_tokens, entry.get("model")) == (0, 0, None)
    assert entry.session_started_at == START_MS + 60_000
    assert store.history("main") == []
    assert store.transcript("main")[0]["cwd"] == "/ws"
    archived = directory / f"{old.session_id}.jsonl.reset.2027-01-15T08-01-00.000Z"
    assert "before" in archived.read_text()
    assert not (directory / f"{old.session_id}.jsonl").exists()
    assert (directory / f"{new_id}.jsonl").exists()
    assert store.reset("agent:main:fresh") != store.reset("agent:main:fresh")


def test_delete_archives_unless_asked(store: SessionStore) -> None:
    store.append("agent:main:dm:a", user("keep me"))
    store.append("agent:main:dm:b", user("drop me"))
    a = store.entry("agent:main:dm:a")
    b = store.entry("agent:main:dm:b")
    assert a is not None
    assert b is not None
    directory = store.sessions_dir("main")
    assert store.delete("agent:main:dm:a") is True
    assert store.delete("agent:main:dm:b", delete_transcript=True) is True
    assert store.delete("agent:main:dm:b") is False
    assert store.entry("agent:main:dm:a") is None
    names = os.listdir(directory)
    assert any(n.startswith(f"{a.session_id}.jsonl.deleted.") for n in names)
    assert not any(n.startswith(b.session_id) for n in names)
    again = store.get_or_create("agent:main:dm:a")
    assert again.session_id != a.session_id


def test_history_window_after_compactions(store: SessionStore) -> None:
    ids = store.append_many("main", [user("u1"), assistant("a1"), user("u2"), assistant("a2")])
    store.append("main", {"type": "custom", "customType": "ui", "data": {}})
    assert texts(store.history("main")) == ["u1", "a1", "u2", "a2"]
    assert texts(store.history("main", limit=3)) == ["a1", "u2", "a2"]
    assert store.history("main", limit=0) == []
    store.record_compaction("main", "talked about u1", ids[2], tokens_before=1234)
    store.append_many("main", [user("u3"), assistant("a3")])
    assert texts(store.history("main")) == ["summary:talked about u1", "u2", "a2", "u3", "a3"]
    assert texts(store.history("main", limit=1)) == ["summary:talked about u1", "a3"]
    entry = store.entry("main")
    assert entry is not None
    assert (entry.compaction_count, entry.context_tokens) == (1, 0)
    compaction = next(e for e in store.transcript("main") if e["type"] == "compaction")
    assert compaction["tokensBefore"] == 1234
    assert compaction["firstKeptEntryId"] == ids[2]
    later = store.append("main", user("u4"))
    store.record_compaction("main", "everything so far", later, tokens_before=99)
    assert texts(store.history("main")) == ["summary:everything so far", "u4"]
    store.record_compaction("main", "nothing kept", None, tokens_before=1)
    assert texts(store.history("main")) == ["summary:nothing kept"]
    with pytest.raises(SessionError, match="not in the transcript"):
        store.record_compaction("main", "x", "no-such-id", tokens_before=1)


def test_history_drops_a_tool_result_cut_from_its_call(store: SessionStore) -> None:
    store.append_many(
        "main",
        [user("go"), assistant("", ("c1", "ls")), tool_result("c1", "out"), assistant("ok")],
    )
    roles = [e["message"]["role"] for e in store.history("main", limit=2)]
    assert roles == ["assistant"]
    roles = [e["message"]["role"] for e in store.history("main", limit=3)]
    assert roles == ["assistant", "toolResult", "assistant"]


def test_preview(store: SessionStore) -> None:
    store.append_many(
        "main",
        [user("first question"), assistant("x" * 500), tool_result("c", ""), user("last")],
    )
    store.get_or_create("agent:main:dm:empty")
    previews = store.preview(
        ["main", "agent:main:dm:empty", "agent:main:dm:missing", "bad key!"], limit=2, max_chars=20
    )
    assert [p["status"] for p in previews] == ["ok", "empty", "missing", "error"]
    assert previews[0]["key"] == "agent:main:main"
    items = previews[0]["items"]
    assert [(i["role"], i["text"]) for i in items] == [
        ("assistant", "x" * 19 + "…"),
        ("user", "last"),
    ]
    assert "invalid session key" in previews[3]["error"]


def test_preview_of_a_large_transcript_reads_past_its_tail(store: SessionStore) -> None:
    image = {"type": "image", "mimeType": "image/png", "data": "A" * (PREVIEW_WINDOW_BYTES + 10)}
    store.append("main", user("early"))
    message = {"role": "user", "content": [image]}
    store.append("main", {"type": "message", "message": message})
    (preview,) = store.preview(["main"], limit=5)
    assert [i["text"] for i in preview["items"]] == ["early"]


def test_a_torn_last_line_is_ignored_then_cut(store: SessionStore) -> None:
    ids = store.append_many("main", [user("one"), user("two")])
    path = store.transcript_path("main")
    assert path is not None
    with path.open("ab") as fh:
        fh.write(b'{"type":"message","id":"torn","message":{"role":"us')
    assert [e.get("id") for e in store.transcript("main")[1:]] == ids
    fresh = SessionStore(store.state_dir)  # another process, knowing nothing of the file
    third = fresh.append("main", user("three"))
    entries = fresh.transcript("main")[1:]
    assert [e["id"] for e in entries] == [*ids, third]
    assert entries[-1]["parentId"] == ids[-1]
    assert path.read_bytes().endswith(b"\n")
    assert b"torn" not in path.read_bytes()


def test_a_corrupt_index_is_moved_aside_and_rebuilt(store: SessionStore) -> None:
    store.append_many("main", [user("a"), assistant("b")])
    group_key = "agent:main:telegram:group:-7"
    kept = store.append(group_key, user("c"))
    store.record_compaction(group_key, "s", kept, 5)
    before = {e.key: e.session_id for e in store.list()}
    directory = store.sessions_dir("main")
    (directory / "sessions.json").write_bytes(b'{"agent:main:main": {"sessionId": "abc", ')
    fresh = SessionStore(store.state_dir)
    assert {e.key: e.session_id for e in fresh.list()} == before
    group = fresh.entry(group_key)
    assert group is not None
    assert (group.message_count, group.compaction_count, group.chat_type) == (1, 1, "group")
    main = fresh.entry("main")
    assert main is not None
    assert main.message_count == 2
    assert len(list(directory.glob("sessions.json.corrupt.*"))) == 1
    json.loads((directory / "sessions.json").read_text())
    # The store that was open all along recovers the same way, and keeps working.
    (directory / "sessions.json").write_text("[1, 2")
    store.append("main", user("after"))
    entry = store.entry("main")
    assert entry is not None
    assert entry.message_count == 3
    assert len(list(directory.glob("sessions.json.corrupt.*"))) == 2


def test_bad_entries_in_the_index_are_dropped_one_by_one(store: SessionStore) -> None:
    store.get_or_create("main")
    directory = store.sessions_dir("main")
    index = json.loads((directory / "sessions.json").read_text())
    index["agent:main:broken"] = {"no": "sessionId"}
    (directory / "sessions.json").write_text(json.dumps(index))
    assert [e.key for e in SessionStore(store.state_dir).list()] == ["agent:main:main"]


def test_stale_temp_files_are_swept(store: SessionStore) -> None:
    directory = store.sessions_dir("main")
    directory.mkdir(parents=True)
    stale = directory / ".sessions.json.abc.tmp"
    fresh = directory / ".sessions.json.def.tmp"
    stale.write_text("x")
    fresh.write_text("y")
    os.utime(stale, (time.time() - 300, time.time() - 300))
    store.get_or_create("main")
    assert not stale.exists()
    assert fresh.exists()


# ---------------------------------------------------------------------------- reset policy


def test_daily_reset_at_the_local_hour(tmp_path: Path, clock: ManualClock) -> None:
    settings = SessionSettings(reset=SessionResetSettings(mode="daily", at_hour=4))
    store = SessionStore(tmp_path, settings=settings, clock=clock, tz=UTC)
    store.append("main", user("08:00"))
    entry = store.get_or_reset("main")
    assert not store.needs_reset(entry)
    clock.advance(19 * 3600)  # 03:00 the next day
    assert store.get_or_reset("main").session_id == entry.session_id
    clock.advance(3600)  # 04:00
    assert store.needs_reset(entry)
    fresh = store.get_or_reset("main")
    assert fresh.session_id != entry.session_id
    assert fresh.session_started_at == clock.now_ms()
    assert len(list(store.sessions_dir("main").glob("*.jsonl.reset.*"))) == 1
    # A session without messages is restamped, not archived.
    clock.advance(24 * 3600)
    again = store.get_or_reset("main")
    assert again.session_id == fresh.session_id
    assert again.session_started_at == clock.now_ms()
    assert len(list(store.sessions_dir("main").glob("*.jsonl.reset.*"))) == 1


def test_daily_boundary_in_other_time_zones() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 2027-01-15 08:00 UTC is 17:00 in Tokyo: the last 04:00 there was 19:00 UTC the day before.
    assert daily_boundary_ms(START_MS, 4, tokyo) == START_MS - 13 * 3600 * 1000
    assert daily_boundary_ms(START_MS, 4, UTC) == START_MS - 4 * 3600 * 1000
    assert daily_boundary_ms(START_MS, 8, UTC) == START_MS
    assert daily_boundary_ms(START_MS, 9, UTC) == START_MS - 23 * 3600 * 1000
    assert isinstance(daily_boundary_ms(START_MS, 4), int)  # the system's zone


def test_idle_and_never_policies(clock: ManualClock) -> None:
    idle = SessionResetSettings(mode="idle", idle_minutes=30)
    entry = {"sessionStartedAt": START_MS, "lastInteractionAt": START_MS}
    assert not needs_reset(entry, START_MS + 29 * 60_000, idle)
    assert needs_reset(entry, START_MS + 30 * 60_000, idle)
    assert not needs_reset(entry, START_MS + 10**9, SessionResetSettings(mode="idle"))
    assert not needs_reset(entry, START_MS + 10**12, SessionResetSettings(mode="never"))
    assert needs_reset({}, START_MS, SessionResetSettings(mode="daily"))


def test_idle_reset_follows_the_last_message(tmp_path: Path, clock: ManualClock) -> None:
    settings = SessionSettings(reset=SessionResetSettings(mode="idle", idle_minutes=30))
    store = SessionStore(tmp_path, settings=settings, clock=clock)
    first = store.get_or_reset("main").session_id
    store.append("main", user("hi"))
    clock.advance(29 * 60)
    store.append("main", user("still here"))
    clock.advance(29 * 60)
    assert store.get_or_reset("main").session_id == first
    clock.advance(2 * 60)
    assert store.get_or_reset("main").session_id != first


# ---------------------------------------------------------------------------- processes

APPENDER = """
import sys
from pathlib import Path
from moltis_desktop.sessions.store import SessionStore
store = SessionStore(Path(sys.argv[1]))
name, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    text = f"{name}-{i}" + "." * (i * 97 % 5000)
    store.append("agent:main:shared", {"type": "message", "message": {
        "role": "user", "content": [{"type": "text", "text": text}]}})
    if i % 10 == 0:
        store.add_usage("agent:main:shared", "m", "p", {"input": 1, "output": 1})
    if i % 25 == 0:
        store.patch("agent:main:shared", **{f"seen{name}": i})
"""


def test_two_processes_append_to_one_session(tmp_path: Path) -> None:
    count = 80
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), name, str(count)])
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    store = SessionStore(tmp_path)
    entries = store.transcript("agent:main:shared")[1:]
    assert len(entries) == 2 * count
    assert [e["parentId"] for e in entries[1:]] == [e["id"] for e in entries[:-1]]
    seen = [b["text"].split(".")[0] for e in entries for b in e["message"]["content"]]
    for name in ("a", "b"):
        assert [s for s in seen if s.startswith(name)] == [f"{name}-{i}" for i in range(count)]
    entry = store.entry("agent:main:shared")
    assert entry is not None
    assert entry.message_count == 2 * count
    assert entry.input_tokens == 2 * (count // 10)
    assert (entry.get("seena"), entry.get("seenb")) == (75, 75)
    assert store.usage.summarize().totals.calls == 2 * (count // 10)


# ---------------------------------------------------------------------------- usage ledger


def test_usage_summaries_by_session_model_and_day(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage")
    day = 24 * 3600 * 1000
    jan31 = 1_801_389_600_000  # 2027-01-31 10:00 UTC
    calls = [
        (jan31, "agent:main:main", "anthropic", "opus", {"input": 10, "output": 1}),
        (jan31 + 1000, "agent:main:main", "openai", "gpt", {"input": 20, "cacheRead": 5}),
        (jan31 + 15 * 3600 * 1000, "cron:x", "anthropic", "opus", {"output": 7}),  # Feb 1
        (jan31 + 3 * day, "agent:ops:main", "anthropic", "opus", {"cacheWrite": 3}),
    ]
    for ts, key, provider, model, usage in calls:
        ledger.record(
            agent_id="main", session_key=key, provider=provider, model=model, usage=usage, ts_ms=ts
        )
    assert sorted(p.name for p in (tmp_path / "usage").iterdir() if p.suffix == ".jsonl") == [
        "2027-01.jsonl",
        "2027-02.jsonl",
    ]
    everything = ledger.summarize(tz=UTC)
    assert everything.totals.to_dict() == {
        "input": 30,
        "output": 8,
        "cacheRead": 5,
        "cacheWrite": 3,
        "totalTokens": 46,
        "calls": 4,
    }
    assert everything.by_model["anthropic/opus"].total == 21
    assert everything.by_session["agent:main:main"].calls == 2
    assert list(everything.by_day) == ["2027-01-31", "2027-02-01", "2027-02-03"]
    assert everything.by_day_model["2027-01-31"]["openai/gpt"].input == 20
    jan = ledger.summarize(date(2027, 1, 1), date(2027, 1, 31), tz=UTC)
    assert jan.totals.calls == 2
    # In New York the third call (01:00 UTC on Feb 1) is still on Jan 31, local time.
    new_york = timezone(timedelta(hours=-5))
    assert list(ledger.summarize(tz=new_york).by_day) == ["2027-01-31", "2027-02-03"]
    assert ledger.summarize(date(2027, 1, 1), date(2027, 1, 31), tz=new_york).totals.calls == 3
    assert ledger.summarize(date(2027, 2, 1), date(2027, 2, 1), tz=UTC).totals.output == 7
    assert ledger.summarize(session_key="cron:x").totals.output == 7
    assert ledger.summarize(agent_id="other").totals.calls == 0
    assert everything.to_dict()["byModel"]["openai/gpt"]["cacheRead"] == 5
    assert UsageLedger(tmp_path / "nowhere").summarize().totals.calls == 0


def test_normalize_usage() -> None:
    assert normalize_usage({"input": 3, "output": 4.0}) == {
        "input": 3,
        "output": 4,
        "cacheRead": 0,
        "cacheWrite": 0,
        "totalTokens": 7,
    }
    assert normalize_usage({"input": 1, "totalTokens": 10})["totalTokens"] == 10
    for bad in ({"input": "3"}, {"output": True}, {"cacheRead": -2}):
        with pytest.raises(SessionError):
            normalize_usage(bad)


def test_a_torn_ledger_line_does_not_spoil_the_next(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path)
    ledger.record(
        agent_id="a", session_key="k", provider="p", model="m", usage={"input": 1}, ts_ms=START_MS
    )
    with (tmp_path / "2027-01.jsonl").open("ab") as fh:
        fh.write(b'{"ts": 18000')
    ledger.record(
        agent_id="a", session_key="k", provider="p", model="m", usage={"input": 2}, ts_ms=START_MS
    )
    assert [r["input"] for r in ledger.records()] == [1, 2]
