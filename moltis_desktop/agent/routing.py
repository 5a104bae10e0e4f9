"""Which agent answers an inbound message: bindings matched most-specific first
(peer > guild > team > account > channel > default)."""

from __future__ import annotations

from dataclasses import dataclass

from moltis_desktop.config.settings import BindingSettings, Settings

_SPECIFICITY = ("peer", "guild", "team", "account", "channel")


@dataclass(frozen=True)
class Inbound:
    """Where a message came from."""

    channel: str = ""
    account: str = ""
    peer: str = ""
    guild: str = ""
    team: str = ""


def _matches(binding: BindingSettings, inbound: Inbound) -> bool:
    return all(
        not getattr(binding, f) or getattr(binding, f) == getattr(inbound, f) for f in _SPECIFICITY
    )


def _rank(binding: BindingSettings) -> tuple[bool, ...]:
    # The most specific field set decides first, then the next, and so on.
    return tuple(bool(getattr(binding, f)) for f in _SPECIFICITY)


def route(settings: Settings, inbound: Inbound) -> str:
    """The agent id for `inbound` (the default agent when no binding matches)."""
    known = {a.id for a in settings.agents.list}
    candidates = [b for b in settings.bindings if b.agent in known and _matches(b, inbound)]
    if not candidates:
        return settings.agents.default
    return max(candidates, key=_rank).agent
