"""Who is calling, from where, and through which name: the rules the WebSocket handshake and
every HTTP route share.

- `client_address`: the caller's address and whether it is *local* (on this machine, not
  behind a proxy). Forwarding headers count only from `gateway.trusted_proxies`; with no
  trusted proxies, a request that carries them is not local, whatever its peer address.
- `host_allowed`: the `Host` allowlist that makes DNS rebinding useless (a page on
  `evil.example` whose name now resolves to 127.0.0.1 still says `Host: evil.example`).
- `check_origin`: whether a browser page at an `Origin` may use the gateway.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from moltis_desktop.gateway.auth import is_loopback

_LOGGER = logging.getLogger(__name__)

FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")
"""Headers a reverse proxy adds; their presence means the peer is not the client."""
TRUSTED_SUFFIXES = (".localhost", ".local", ".home.arpa", ".internal", ".lan", ".ts.net")
"""Names that someone else's public DNS cannot point at this machine: `.localhost` is
loopback by definition, `.local` is answered by mDNS on the local network only,
`.home.arpa` (RFC 8375), `.internal` (reserved for private use) and `.lan` (what home
routers hand out) are answered by the local network's own resolver only, and `.ts.net`
names are handed out by Tailscale to the machines of a tailnet."""
_ADDRESSES_TTL_S = 30.0
_MAX_ANSWERS = 256

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=64)
def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """`gateway.trusted_proxies` as networks (an address is a /32 or /128); bad entries are
    skipped (the config check reports them)."""
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            _LOGGER.warning("gateway.trusted_proxies: %r is not an address or network", entry)
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"').split("%", 1)[0]
    if text.startswith("["):  # [v6]:port
        if "]" not in text:
            return None  # an unclosed bracket is not an address
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Iterable[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in nets)


def _forwarded_chain(headers: Mapping[str, str]) -> list[str]:
    """The client addresses a proxy chain reports, nearest last."""
    xff = headers.get("X-Forwarded-For")
    if xff:
        return [part.strip() for part in xff.split(",") if part.strip()]
    forwarded = headers.get("Forwarded")
    if forwarded:
        chain = []
        for element in forwarded.split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                if key.lower() == "for" and value:
                    chain.append(value)
        return chain
    real = headers.get("X-Real-IP")
    return [real.strip()] if real else []


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted_proxies: tuple[str, ...]
) -> tuple[str, bool]:
    """(the client's address, whether it is local) for a connection from `peer`.

    Without forwarding headers the peer is the client. With them, the peer must be a trusted
    proxy, and the client is the nearest address in the chain that is not one; such a
    client is local only when that address is loopback (a browser on this machine going
    through a local proxy). Forwarding headers from anyone else make the request non-local:
    a local reverse proxy (Tailscale Serve, Caddy) that was not declared would otherwise
    turn every remote client into a local one.
    """
    peer = peer or ""
    if not any(name in headers for name in FORWARDING_HEADERS):
        return peer, is_loopback(peer)
    nets = parse_networks(trusted_proxies)
    peer_ip = _ip(peer)
    if peer_ip is None or not _in(peer_ip, nets):
        return peer, False
    chain = _forwarded_chain(headers)
    for hop in reversed(chain):
        addr = _ip(hop)
        if addr is None:
            return peer, False  # an unparseable hop (`unknown`, an obfuscated name)
        if not _in(addr, nets):
            return str(addr), addr.is_loopback
    # Every hop is a trusted proxy: the first one is the client (a browser on this machine
    # going through a local proxy reports 127.0.0.1).
    first = _ip(chain[0]) if chain else None
    if first is None:
        return peer, False
    return str(first), first.is_loopback


# ------------------------------------------------------------------------------ Host


class HostAllowlist:
    """Which names a request's `Host` may carry: loopback, private and link-local address
    literals and this machine's own addresses, `localhost`, this machine's name, the
    `TRUSTED_SUFFIXES`, and `gateway.allowed_hosts` (`name`, or `.suffix` / `*.suffix`).

    An address literal cannot be rebound (DNS rebinding needs a name the attacker's DNS
    answers for), so any address of this machine is fine; a public address that is not
    ours (a port forward on a router) must be listed in `gateway.allowed_hosts`.
    """

    def __init__(self) -> None:
        self._own: frozenset[str] = frozenset()
        self._own_at = -1e9
        self._answers: dict[tuple[str, str, tuple[str, ...]], bool] = {}
        """Answers by (Host, bound address, allowed_hosts), dropped with the address list."""
        host = socket.gethostname().strip().rstrip(".").lower()
        short = host.split(".")[0]
        self._names = frozenset(n for n in ("localhost", host, short) if n)

    def _own_addresses(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._own_at > _ADDRESSES_TTL_S:
            self._own_at = now
            self._answers.clear()
            try:
                from moltis_desktop.pairing.setupcode import lan_addresses

                self._own = frozenset(lan_addresses(include_loopback=True))
            except Exception as exc:  # no interface list on this platform: literals below
                _LOGGER.debug("cannot list this machine's addresses: %s", exc)
        return self._own

    def allowed(self, host_header: str | None, *, bound: str, configured: tuple[str, ...]) -> bool:
        """Whether a request for `host_header` is answered (remembered per Host, bound
        address and `allowed_hosts`, and judged again when the address list is)."""
        if not host_header:
            return True  # HTTP/1.0 tools; every browser sends Host
        if time.monotonic() - self._own_at > _ADDRESSES_TTL_S:
            self._own_addresses()  # refreshed, and the answers with it
        key = (host_header, bound, configured)
        known = self._answers.get(key)
        if known is None:
            if len(self._answers) >= _MAX_ANSWERS:
                self._answers.clear()
            known = self._answers[key] = self._judge(host_header, bound, configured)
        return known

    def _judge(self, host_header: str, bound: str, configured: tuple[str, ...]) -> bool:
        name = _host_name(host_header)
        if name is None:
            return False
        addr = _ip(name)
        if addr is not None:
            return (
                addr.is_loopback
                or addr.is_private
                or addr.is_link_local
                or str(addr) == bound
                or str(addr) in self._own_addresses()
                or name in {c.lower() for c in configured}
            )
        if name in self._names or name.endswith(TRUSTED_SUFFIXES):
            return True
        for entry in configured:
            wanted = entry.strip().lower().rstrip(".")
            if wanted.startswith(("*.", ".")):
                if name.endswith(wanted.lstrip("*")):
                    return True
            elif name == wanted:
                return True
        return False


def _host_name(host_header: str) -> str | None:
    """The name or address in a `Host` header, without its port; None when malformed."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        return host[1:end]
    if host.count(":") > 1:
        return None  # a bare IPv6 literal is not a valid Host
    name = host.split(":", 1)[0].rstrip(".")
    if not name or any(c in name for c in "/\\@ \t"):
        return None
    return name


# ---------------------------------------------------------------------------- Origin


def _same_origin_ok(host: str, local: bool) -> bool:
    """A page on the gateway's own origin: its `Host` has passed the allowlist already (every
    request does, the WebSocket upgrade included), so only names that mean "this machine"
    need more: a page on `localhost` or a loopback address is the owner's only for a local
    client (behind a proxy, `localhost` is the proxy's machine)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost") or is_loopback(host):
        return local
    return True


def origin_listed(normalized: str, allowed: tuple[str, ...]) -> bool:
    """Whether a normalised (`scheme://host[:port]`, lower case) origin is in `allowed`
    (`gateway.cors.allowed_origins`; `*` allows any)."""
    return "*" in allowed or normalized in {a.rstrip("/").lower() for a in allowed}


def check_origin(
    origin: str | None, host_header: str | None, local: bool, allowed: tuple[str, ...]
) -> str | None:
    """None when a browser page at `origin` may use this gateway, else why not.

    Allowed: an origin in `gateway.cors.allowed_origins`; the gateway's own origin (the
    page's host is the `Host` the request came to, which `HostAllowlist` vetted: one list
    of trusted names for both); and, for a local client, a page on this machine
    (`localhost` or a loopback address)."""
    if not origin or origin == "null":
        return "origin missing or invalid"
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "origin missing or invalid"
    normalized = f"{parts.scheme}://{parts.netloc}".lower()
    if origin_listed(normalized, allowed):
        return None
    origin_host = parts.netloc.lower()
    same = bool(host_header) and origin_host == str(host_header).lower()
    if same and _same_origin_ok(parts.hostname, local):
        return None
    if local and (parts.hostname == "localhost" or is_loopback(parts.hostname)):
        return None
    return "origin not allowed"
