"""One-time sign-in tickets for the web app (`/#ticket=…`): the desktop app and
`moltis dashboard` hand a page a ticket, never the gateway token itself."""

from __future__ import annotations

import secrets

from moltis_desktop.core.clock import Clock

TICKET_TTL_MS = 60_000
_MAX_TICKETS = 64


class UiTickets:
    """One-time, short-lived tickets a page trades for the gateway credential."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tickets: dict[str, int] = {}

    def mint(self) -> str:
        now = self._clock.now_ms()
        self._tickets = {t: exp for t, exp in self._tickets.items() if exp > now}
        while len(self._tickets) >= _MAX_TICKETS:
            self._tickets.pop(next(iter(self._tickets)))
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = now + TICKET_TTL_MS
        return ticket

    def redeem(self, ticket: str) -> bool:
        """True once for a live ticket; it is gone afterwards."""
        expires = self._tickets.pop(ticket, None)
        return expires is not None and expires > self._clock.now_ms()
