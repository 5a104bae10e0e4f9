"""`current_time`: the date, time and weekday, in the gateway's zone or an IANA one."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec

from moltis_desktop.agent.tools import ToolContext, ToolError, tool


@tool()
async def current_time(
    ctx: ToolContext,
    timezone: Annotated[
        str, msgspec.Meta(description="IANA zone, e.g. Europe/Paris; default: the gateway's")
    ] = "",
) -> dict[str, Any]:
    """The current date and time (ISO 8601), the weekday and the time zone."""
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            now = datetime.datetime.now(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris"
            ) from None
    else:
        now = datetime.datetime.now().astimezone()
    return {
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "timezone": str(now.tzinfo),
    }
