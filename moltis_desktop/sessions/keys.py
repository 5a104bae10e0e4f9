"""Session keys (`agent:<agentId>:<rest>`, `cron:<jobId>`, `hook:<uuid>`): parse and build."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Literal

from moltis_desktop.core.errors import MoltisError

DEFAULT_AGENT_ID = "main"
DEFAULT_MAIN_KEY = "main"
DEFAULT_ACCOUNT_ID = "default"

SessionKind = Literal["main", "dm", "group", "channel", "room", "cron", "hook", "other"]
"""What a key names: an agent's main session, a DM, a group, a channel or room, a cron job's
or webhook's session, or some other agent-scoped session (`agent:main:subagent:…`)."""
DmScope = Literal["main", "per-peer", "per-channel-peer", "per-account-channel-peer"]
ChatType = Literal["direct", "group", "room"]

_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_CHANNEL = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# Whitespace and control characters would make keys ambiguous in logs, the CLI and the
# index; everything else (Matrix's `!room:server`, `+1555…`, e-mail addresses) is allowed.
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_KINDS: dict[str, SessionKind] = {
    "dm": "dm",
    "group": "group",
    "channel": "channel",
    "room": "room",
    "cron": "cron",
    "hook": "hook",
}
_CONVERSATION_MARKERS = frozenset({"dm", "group", "channel", "room"})
_THREADED = frozenset({"group", "channel", "room"})
_TOPIC = ":topic:"


class SessionKeyError(MoltisError, ValueError):
    """A session key that is malformed; the message says which part and what is expected."""


def _fail(key: str, why: str) -> SessionKeyError:
    return SessionKeyError(
        f"invalid session key {key!r}: {why} (expected e.g. `agent:main:main`, "
        "`agent:main:telegram:dm:<peer>`, `agent:main:slack:group:<id>`, `cron:<jobId>`)"
    )


@dataclass(frozen=True)
class SessionKey:
    """A parsed session key. `str(key)` gives its canonical text."""

    kind: SessionKind
    agent_id: str | None
    """The agent whose store holds the session; None for the unscoped `cron:`/`hook:` forms
    (they belong to the default agent)."""
    id: str
    """The main key, peer id, group/channel/room id, cron job id or hook id; for `other`,
    everything after the agent id."""
    channel: str = ""
    """Channel (`telegram`, `slack`, …) for channel-scoped DMs, groups, channels and rooms."""
    account: str = ""
    """Channel account, for `per-account-channel-peer` DMs."""
    thread: str = ""
    """Forum topic / thread id of a group, channel or room (`:topic:<thread>`)."""

    def __post_init__(self) -> None:
        text = self._text()
        if self.agent_id is not None and not _AGENT_ID.fullmatch(self.agent_id):
            raise _fail(text, f"agent id {self.agent_id!r} must be 1-64 of a-z, 0-9, _ and -")
        if self.agent_id is None and self.kind not in ("cron", "hook"):
            raise _fail(text, "only cron and hook keys may omit `agent:<agentId>:`")
        if not self.id:
            raise _fail(text, f"a {self.kind} key needs an id after its marker")
        if any(not part for part in self.id.split(":")):
            raise _fail(text, "empty segment (`::`)")
        if self.channel and not _CHANNEL.fullmatch(self.channel):
            raise _fail(text, f"channel {self.channel!r} must be a-z, 0-9, _, . and -")
        if self.account and (not self.channel or ":" in self.account):
            raise _fail(text, "an account needs a channel and may not contain `:`")
        if self.thread and self.kind not in _THREADED:
            raise _fail(text, "only group, channel and room keys have a topic")
        if self.kind == "main" and (":" in self.id or self.id in _CONVERSATION_MARKERS):
            raise _fail(text, f"main key {self.id!r} must be one segment and not a marker")
        for part in (self.id, self.account, self.thread):
            if _BAD_CHARS.search(part):
                raise _fail(text, "whitespace and control characters are not allowed")

    def __str__(self) -> str:
        return self._text()

    def _text(self) -> str:
        if self.kind in ("cron", "hook"):
            head = [] if self.agent_id is None else ["agent", self.agent_id]
            return ":".join([*head, self.kind, self.id])
        parts = ["agent", self.agent_id or ""]
        if self.kind in ("main", "other"):
            return ":".join([*parts, self.id])
        if self.channel:
            parts.append(self.channel)
        if self.account:
            parts.append(self.account)
        parts += [self.kind, self.id]
        if self.thread:
            parts += ["topic", self.thread]
        return ":".join(parts)

    @property
    def chat_type(self) -> ChatType | None:
        """OpenClaw's `chatType` for the index: `direct`, `group` or `room`; None when the
        key does not say (cron, hook, other)."""
        if self.kind in ("main", "dm"):
            return "direct"
        if self.kind == "group":
            return "group"
        if self.kind in ("channel", "room"):
            return "room"
        return None


def parse_session_key(
    key: str, *, default_agent: str = DEFAULT_AGENT_ID, main_key: str = DEFAULT_MAIN_KEY
) -> SessionKey:
    """Parse a key, accepting the short forms users type: `main` is the default agent's main
    session and any other key without `agent:` belongs to the default agent
    (`telegram:group:1` → `agent:<default>:telegram:group:1`).

    Agent ids, channels, accounts, markers and main keys are case-insensitive (lowercased);
    peer, group and thread ids keep their case, since some channels' ids are case-sensitive
    (Matrix room ids). Raises `SessionKeyError` for a malformed key.
    """
    text = key.strip()
    if not text:
        raise _fail(key, "it is empty")
    head, _, tail = text.partition(":")
    head = head.lower()
    if head in ("cron", "hook"):
        if not tail:
            raise _fail(text, f"a {head} key needs an id after `{head}:`")
        return SessionKey(_KINDS[head], None, tail)
    if head == "agent":
        agent, sep, rest = tail.partition(":")
        if not sep or not rest:
            raise _fail(text, "`agent:<agentId>:` must be followed by the session part")
        return _parse_rest(text, agent.lower(), rest)
    if text.lower() == "main":
        return SessionKey("main", default_agent.lower(), main_key.lower())
    return _parse_rest(text, default_agent.lower(), text)


def _parse_rest(text: str, agent_id: str, rest: str) -> SessionKey:
    parts = rest.split(":")
    if any(not part for part in parts):
        raise _fail(text, "empty segment (`::`)")
    first = parts[0].lower()

    def remainder(start: int, kind: str) -> str:
        if len(parts) <= start:
            raise _fail(text, f"a {kind} key needs an id after `{kind}:`")
        return ":".join(parts[start:])

    if first in ("cron", "hook"):
        return SessionKey(_KINDS[first], agent_id, remainder(1, first))
    if first in _CONVERSATION_MARKERS:
        # `agent:<id>:dm:<peer>` (per-peer) and the legacy channel-less `group:<id>`.
        return _conversation(text, agent_id, first, remainder(1, first))
    if len(parts) >= 2 and parts[1].lower() in _CONVERSATION_MARKERS:
        kind = parts[1].lower()
        return _conversation(text, agent_id, kind, remainder(2, kind), channel=first)
    if len(parts) >= 3 and parts[2].lower() == "dm":
        return SessionKey(
            "dm", agent_id, remainder(3, "dm"), channel=first, account=parts[1].lower()
        )
    if len(parts) == 1:
        return SessionKey("main", agent_id, first)
    return SessionKey("other", agent_id, rest)


def _conversation(
    text: str, agent_id: str, kind: str, ident: str, *, channel: str = ""
) -> SessionKey:
    thread = ""
    if kind in _THREADED and _TOPIC in ident:
        ident, _, thread = ident.rpartition(_TOPIC)
        if not ident or not thread:
            raise _fail(text, "`:topic:` needs an id before it and a thread id after it")
    return SessionKey(_KINDS[kind], agent_id, ident, channel=channel, thread=thread)


def normalize_agent_id(agent_id: str) -> str:
    """`agent_id` lowercased; raises `SessionKeyError` unless it is 1-64 of a-z, 0-9, _, -."""
    normalized = agent_id.strip().lower()
    if not _AGENT_ID.fullmatch(normalized):
        raise SessionKeyError(f"invalid agent id {agent_id!r}: use 1-64 of a-z, 0-9, _ and -")
    return normalized


def normalize_session_key(
    key: str, *, default_agent: str = DEFAULT_AGENT_ID, main_key: str = DEFAULT_MAIN_KEY
) -> str:
    """The canonical text of `key` (see `parse_session_key` for the short forms)."""
    return str(parse_session_key(key, default_agent=default_agent, main_key=main_key))


def agent_id_of(key: str, *, default_agent: str = DEFAULT_AGENT_ID) -> str:
    """The agent whose store holds `key`'s session (the default agent for `cron:`/`hook:`)."""
    parsed = parse_session_key(key, default_agent=default_agent)
    return parsed.agent_id or default_agent.lower()


@functools.lru_cache(maxsize=64)
def main_session_key(agent_id: str = DEFAULT_AGENT_ID, main_key: str = DEFAULT_MAIN_KEY) -> str:
    """`agent:<agentId>:<mainKey>` (cached: every `hello-ok` carries it)."""
    return str(SessionKey("main", agent_id.strip().lower(), main_key.strip().lower()))


def dm_session_key(
    agent_id: str,
    peer_id: str,
    *,
    scope: DmScope = "main",
    channel: str = "",
    account: str = "",
    main_key: str = DEFAULT_MAIN_KEY,
) -> str:
    """The session a direct message from `peer_id` goes to under `session.dm_scope`:
    the main session (`main`), `agent:<id>:dm:<peer>` (`per-peer`),
    `agent:<id>:<channel>:dm:<peer>` (`per-channel-peer`) or
    `agent:<id>:<channel>:<account>:dm:<peer>` (`per-account-channel-peer`; the account
    defaults to `default`)."""
    agent = agent_id.strip().lower()
    peer = peer_id.strip()
    if scope == "main":
        return main_session_key(agent, main_key)
    if scope == "per-peer":
        return str(SessionKey("dm", agent, peer))
    if not channel.strip():
        raise SessionKeyError(f"dm scope {scope!r} needs the channel the message came from")
    chan = channel.strip().lower()
    if scope == "per-channel-peer":
        return str(SessionKey("dm", agent, peer, channel=chan))
    acct = account.strip().lower() or DEFAULT_ACCOUNT_ID
    return str(SessionKey("dm", agent, peer, channel=chan, account=acct))


def group_session_key(agent_id: str, channel: str, group_id: str, *, thread: str = "") -> str:
    """`agent:<id>:<channel>:group:<groupId>`, with `:topic:<thread>` for forum topics."""
    return str(
        SessionKey(
            "group",
            agent_id.strip().lower(),
            group_id.strip(),
            channel=channel.strip().lower(),
            thread=thread.strip(),
        )
    )


def channel_session_key(
    agent_id: str,
    channel: str,
    channel_id: str,
    *,
    kind: Literal["channel", "room"] = "channel",
    thread: str = "",
) -> str:
    """`agent:<id>:<channel>:channel:<id>` (or `…:room:<id>`), with `:topic:<thread>`."""
    return str(
        SessionKey(
            kind,
            agent_id.strip().lower(),
            channel_id.strip(),
            channel=channel.strip().lower(),
            thread=thread.strip(),
        )
    )


def cron_session_key(job_id: str) -> str:
    """`cron:<jobId>`: a cron job's own session."""
    return str(SessionKey("cron", None, job_id.strip()))


def hook_session_key(hook_id: str | None = None) -> str:
    """`hook:<uuid>`: a webhook's session (a fresh uuid when none is given)."""
    return str(SessionKey("hook", None, (hook_id or str(uuid.uuid4())).strip()))
