"""One-time sign-in tickets for the web app (`/#ticket=…`): the desktop app, `moltis
dashboard` and the start-up link hand a page a ticket, never the gateway token itself.

A ticket works once, until it expires (a minute unless said otherwise). Only its SHA-256 is
kept, and a presented ticket is compared with every live one in constant time
(`hmac.compare_digest`), so neither memory nor timing tells anything about a live ticket.
Tickets are never logged (the link carries one in its fragment, which browsers do not
send; the page posts it in a body, which the gateway does not log).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from moltis_desktop.core.clock import Clock

TICKET_TTL_MS = 60_000
_MAX_TICKETS = 64


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).digest()


class UiTickets:
    """One-time, short-lived tickets a page trades for the gateway credential."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tickets: dict[bytes, int] = {}
        """Expiry (ms) by the ticket's SHA-256."""

    def mint(self, ttl_ms: int = TICKET_TTL_MS) -> str:
        now = self._clock.now_ms()
        self._tickets = {d: exp for d, exp in self._tickets.items() if exp > now}
        while len(self._tickets) >= _MAX_TICKETS:
            self._tickets.pop(next(iter(self._tickets)))
        ticket = secrets.token_urlsafe(24)
        self._tickets[_digest(ticket)] = now + ttl_ms
        return ticket

    def redeem(self, ticket: str) -> bool:
        """True once for a live ticket; it is gone afterwards."""
        given = _digest(ticket)
        found: bytes | None = None
        for digest in list(self._tickets):  # every one, whatever matches: constant time
            if hmac.compare_digest(digest, given):
                found = digest
        if found is None:
            return False
        expires = self._tickets.pop(found)
        return expires > self._clock.now_ms()
