"""The usage ledger: one fsynced JSON line per model call, monthly files, token totals."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.paths import private_dir
from moltis_desktop.sessions.entry import SessionError, SessionStoreBusyError
from moltis_desktop.sessions.jsonl import append_lines, encode_line, read_records

if TYPE_CHECKING:
    from filelock import FileLock

_MONTH_FILE = re.compile(r"\d{4}-\d{2}\.jsonl")
USAGE_FIELDS = ("input", "output", "cacheRead", "cacheWrite")


def normalize_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """`{input, output, cacheRead, cacheWrite, totalTokens}` as non-negative ints (missing
    counts are 0; `totalTokens` defaults to their sum). Raises `SessionError`."""
    out: dict[str, int] = {}
    for name in (*USAGE_FIELDS, "totalTokens"):
        value = usage.get(name, 0) or 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SessionError(f"usage.{name} must be a non-negative number, not {value!r}")
        out[name] = int(value)
    if not out["totalTokens"]:
        out["totalTokens"] = sum(out[name] for name in USAGE_FIELDS)
    return out


@dataclass(frozen=True)
class UsageTotals:
    """Token totals of some model calls."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.calls + other.calls,
        )

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> UsageTotals:
        """The totals of one ledger record."""

        def num(name: str) -> int:
            value = record.get(name)
            return int(value) if isinstance(value, int | float) else 0

        return cls(num("input"), num("output"), num("cacheRead"), num("cacheWrite"), 1)

    def to_dict(self) -> dict[str, int]:
        """camelCase, as the `usage.*` answers carry them."""
        return {
            "input": self.input,
            "output": self.output,
            "cacheRead": self.cache_read,
            "cacheWrite": self.cache_write,
            "totalTokens": self.total,
            "calls": self.calls,
        }


@dataclass(frozen=True)
class UsageSummary:
    """Token totals over a date range, overall and broken down."""

    start: date | None
    end: date | None
    totals: UsageTotals = UsageTotals()
    by_session: Mapping[str, UsageTotals] = field(default_factory=dict)
    """Per session key."""
    by_model: Mapping[str, UsageTotals] = field(default_factory=dict)
    """Per `provider/model` (the price table's key)."""
    by_day: Mapping[str, UsageTotals] = field(default_factory=dict)
    """Per local date (`YYYY-MM-DD`)."""
    by_day_model: Mapping[str, Mapping[str, UsageTotals]] = field(default_factory=dict)
    """Per local date, then per `provider/model` (what a daily cost needs)."""

    def to_dict(self) -> dict[str, Any]:
        def flat(table: Mapping[str, UsageTotals]) -> dict[str, Any]:
            return {name: totals.to_dict() for name, totals in table.items()}

        return {
            "startDate": self.start.isoformat() if self.start else None,
            "endDate": self.end.isoformat() if self.end else None,
            "totals": self.totals.to_dict(),
            "bySession": flat(self.by_session),
            "byModel": flat(self.by_model),
            "byDay": flat(self.by_day),
            "byDayModel": {day: flat(models) for day, models in self.by_day_model.items()},
        }


def _local_midnight_ms(day: date, tz: tzinfo | None) -> int:
    return int(datetime.combine(day, dtime(), tzinfo=tz).timestamp() * 1000)


def _month_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m")


class UsageLedger:
    """Appends usage records to `<directory>/<YYYY-MM>.jsonl` (the UTC month of the call)
    and adds them up. Safe to share between threads and processes."""

    def __init__(
        self, directory: Path, *, clock: Clock = SYSTEM_CLOCK, lock_timeout_s: float = 30.0
    ) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._lock_timeout_s = lock_timeout_s
        self._file_lock: FileLock | None = None

    def record(
        self,
        *,
        agent_id: str,
        session_key: str,
        provider: str,
        model: str,
        usage: Mapping[str, Any],
        ts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Append one model call's usage (`{input, output, cacheRead, cacheWrite}`) and
        return the record written."""
        counts = normalize_usage(usage)
        ts = self._clock.now_ms() if ts_ms is None else ts_ms
        record: dict[str, Any] = {
            "ts": ts,
            "agentId": agent_id,
            "sessionKey": session_key,
            "provider": provider,
            "model": model,
            **{name: counts[name] for name in USAGE_FIELDS},
        }
        private_dir(self.directory)
        with self._thread_lock:
            try:
                with self._cross_process_lock():
                    append_lines(self.directory / f"{_month_of(ts)}.jsonl", [encode_line(record)])
            except TimeoutError:  # filelock.Timeout is one
                raise SessionStoreBusyError(
                    f"the usage ledger in {self.directory} is locked by another process"
                ) from None
        return record

    def _cross_process_lock(self) -> FileLock:
        # filelock (2 MiB of modules) loads with the first write, not with the gateway.
        if self._file_lock is None:
            from filelock import FileLock

            self._file_lock = FileLock(
                str(self.directory / ".usage.lock"),
                timeout=self._lock_timeout_s,
                thread_local=False,
            )
        return self._file_lock

    def _files(self, since_ms: int | None, until_ms: int | None) -> list[Path]:
        if not self.directory.is_dir():
            return []
        first = _month_of(since_ms) if since_ms is not None else ""
        last = _month_of(until_ms) if until_ms is not None else "9999-99"
        return sorted(
            path
            for path in self.directory.iterdir()
            if _MONTH_FILE.fullmatch(path.name) and first <= path.stem <= last
        )

    def records(
        self, start: date | None = None, end: date | None = None, *, tz: tzinfo | None = None
    ) -> Iterator[dict[str, Any]]:
        """Records whose call fell on a local date from `start` to `end` (both included;
        None leaves that side open). `tz` None means the system's local time zone."""
        since = _local_midnight_ms(start, tz) if start is not None else None
        until = _local_midnight_ms(end + timedelta(days=1), tz) if end is not None else None
        for path in self._files(since, until):
            for record in read_records(path):
                ts = record.get("ts")
                if not isinstance(ts, int):
                    continue
                if (since is None or ts >= since) and (until is None or ts < until):
                    yield record

    def summarize(
        self,
        start: date | None = None,
        end: date | None = None,
        *,
        tz: tzinfo | None = None,
        agent_id: str | None = None,
        session_key: str | None = None,
    ) -> UsageSummary:
        """Totals from `start` to `end` (local dates, both included), overall, per session,
        per model, per day and per day and model; optionally of one agent or session."""
        totals = UsageTotals()
        by_session: dict[str, UsageTotals] = {}
        by_model: dict[str, UsageTotals] = {}
        by_day: dict[str, UsageTotals] = {}
        by_day_model: dict[str, dict[str, UsageTotals]] = {}
        for record in self.records(start, end, tz=tz):
            if agent_id is not None and record.get("agentId") != agent_id:
                continue
            if session_key is not None and record.get("sessionKey") != session_key:
                continue
            one = UsageTotals.of(record)
            session = str(record.get("sessionKey", ""))
            model = f"{record.get('provider', '')}/{record.get('model', '')}"
            day = datetime.fromtimestamp(record["ts"] / 1000, tz).date().isoformat()
            totals += one
            by_session[session] = by_session.get(session, UsageTotals()) + one
            by_model[model] = by_model.get(model, UsageTotals()) + one
            by_day[day] = by_day.get(day, UsageTotals()) + one
            models = by_day_model.setdefault(day, {})
            models[model] = models.get(model, UsageTotals()) + one
        return UsageSummary(
            start,
            end,
            totals,
            by_session,
            by_model,
            dict(sorted(by_day.items())),
            dict(sorted(by_day_model.items())),
        )

    def session_totals(self, session_key: str) -> UsageTotals:
        """All-time totals of one session key (across its resets)."""
        return self.summarize(session_key=session_key).totals
