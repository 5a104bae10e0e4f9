"""The reset policy: daily at a local hour, after an idle time, or never."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any

from moltis_desktop.config.settings import SessionResetSettings


def _field_ms(entry: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = entry.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return 0


def daily_boundary_ms(now_ms: int, at_hour: int, tz: tzinfo | None = None) -> int:
    """The latest `at_hour:00` local time at or before `now_ms`, in epoch milliseconds.

    `tz` None means the system's local time zone (as the gateway runs); the wall-clock hour
    is resolved per day, so daylight-saving changes keep the reset at the same local hour.
    """
    hour = min(max(at_hour, 0), 23)
    now = datetime.fromtimestamp(now_ms / 1000, tz)
    boundary = datetime.combine(now.date(), dtime(hour), tzinfo=tz)
    if boundary.timestamp() * 1000 > now_ms:
        boundary = datetime.combine(now.date() - timedelta(days=1), dtime(hour), tzinfo=tz)
    return int(boundary.timestamp() * 1000)


def needs_reset(
    entry: Mapping[str, Any],
    now_ms: int,
    policy: SessionResetSettings,
    *,
    tz: tzinfo | None = None,
) -> bool:
    """Whether the session `entry` (its index fields) should start over at `now_ms`.

    `daily`: it started (`sessionStartedAt`) before the last `at_hour` boundary. `idle`: no
    message for `idle_minutes` (`lastInteractionAt`; 0 minutes means never). `never`: no.
    """
    if policy.mode == "daily":
        started = _field_ms(entry, "sessionStartedAt", "updatedAt")
        return started < daily_boundary_ms(now_ms, policy.at_hour, tz)
    if policy.mode == "idle":
        if policy.idle_minutes <= 0:
            return False
        last = _field_ms(entry, "lastInteractionAt", "updatedAt", "sessionStartedAt")
        return now_ms - last >= policy.idle_minutes * 60_000
    return False
