"""A session's index entry (OpenClaw's `SessionEntry`, camelCase) and the sessions errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moltis_desktop.core.errors import MoltisError

TOKEN_COUNTERS = (
    "inputTokens",
    "outputTokens",
    "cacheReadTokens",
    "cacheWriteTokens",
    "totalTokens",
    "contextTokens",
)
"""Token counters of an entry: cumulative since the session (re)started, except
`contextTokens`, the size of the context after the last model call."""
COUNTERS = (*TOKEN_COUNTERS, "compactionCount", "messageCount")

RESET_FIELDS = frozenset(
    {
        *COUNTERS,
        "sessionId",
        "sessionStartedAt",
        "updatedAt",
        "lastInteractionAt",
        "model",
        "modelProvider",
        "systemSent",
        "abortedLastRun",
        "memoryFlushAt",
        "memoryFlushCompactionCount",
    }
)
"""Fields that describe one run of a session and start over on reset; everything else
(label, display name, thinking level, model overrides, …) carries over."""


class SessionError(MoltisError):
    """A sessions operation that cannot be done as asked (bad entry, unknown id, …)."""


class SessionStoreBusyError(SessionError):
    """Another process held the session store's lock for too long."""


@dataclass(frozen=True)
class SessionEntry:
    """One session's index entry, as stored in `sessions.json` (read-only).

    `fields` is the camelCase record itself, including any extra fields patched in; the
    properties are typed views of the common ones.
    """

    key: str
    """The canonical session key."""
    agent_id: str
    """The agent whose store holds the session."""
    fields: Mapping[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        """A field by its camelCase name."""
        return self.fields.get(name, default)

    def _int(self, name: str) -> int:
        value = self.fields.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def _str(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if isinstance(value, str) else None

    @property
    def session_id(self) -> str:
        """The current transcript's id (`<sessionId>.jsonl`); changes on reset."""
        return str(self.fields["sessionId"])

    @property
    def updated_at(self) -> int:
        """Last change of the entry or transcript, epoch milliseconds."""
        return self._int("updatedAt")

    @property
    def session_started_at(self) -> int:
        """When this session id started (creation or last reset), epoch milliseconds."""
        return self._int("sessionStartedAt")

    @property
    def last_interaction_at(self) -> int:
        """Last message appended, epoch milliseconds."""
        return self._int("lastInteractionAt")

    @property
    def label(self) -> str | None:
        return self._str("label")

    @property
    def display_name(self) -> str | None:
        return self._str("displayName")

    @property
    def chat_type(self) -> str | None:
        return self._str("chatType")

    @property
    def channel(self) -> str | None:
        return self._str("channel")

    @property
    def thinking_level(self) -> str | None:
        return self._str("thinkingLevel")

    @property
    def verbose_level(self) -> str | None:
        return self._str("verboseLevel")

    @property
    def model_override(self) -> str | None:
        return self._str("modelOverride")

    @property
    def input_tokens(self) -> int:
        return self._int("inputTokens")

    @property
    def output_tokens(self) -> int:
        return self._int("outputTokens")

    @property
    def cache_read_tokens(self) -> int:
        return self._int("cacheReadTokens")

    @property
    def cache_write_tokens(self) -> int:
        return self._int("cacheWriteTokens")

    @property
    def total_tokens(self) -> int:
        return self._int("totalTokens")

    @property
    def context_tokens(self) -> int:
        return self._int("contextTokens")

    @property
    def compaction_count(self) -> int:
        return self._int("compactionCount")

    @property
    def message_count(self) -> int:
        return self._int("messageCount")

    def to_dict(self) -> dict[str, Any]:
        """The entry as a protocol answer: `{key, agentId, …fields}`."""
        return {"key": self.key, "agentId": self.agent_id, **self.fields}
