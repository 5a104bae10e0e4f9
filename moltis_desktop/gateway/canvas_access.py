"""Who may see the canvas: capability URLs, as OpenClaw's gateway hands them out.

The canvas is served under `/__openclaw__/cap/<token>/__openclaw__/canvas/…`. `hello-ok`
gives an operator that may read `pluginSurfaceUrls.canvas` (protocol 4; `canvasHostUrl` in
protocol 3): `<scheme>://<host>/__openclaw__/cap/<token>`, to which a client appends
`/__openclaw__/canvas/<path>` as OpenClaw's apps do. A page's relative links then carry the
token by themselves, and the live-reload script has it baked in: a canvas page runs in a
sandbox (an opaque origin, `Origin: null`), so neither a cookie nor a header could carry it.

The tokens are stateless: `base64url(expiry ‖ nonce ‖ HMAC-SHA256(key, expiry ‖ nonce)[:16])`
under a random key made for each run of the gateway. Nothing is stored per token, so handing
one to every `hello-ok` costs nothing and cannot fill a table; a restart (a new key) revokes
them all. The expiry is on the gateway's monotonic clock, which the key's lifetime spans.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import struct

from aiohttp import web

from moltis_desktop.core.clock import Clock
from moltis_desktop.gateway.canvas_live import LiveHub

CAP_PREFIX = "/__openclaw__/cap"
"""Where capability-scoped surfaces live: `<CAP_PREFIX>/<token>/…`."""
CANVAS_PATH = "/__openclaw__/canvas"
"""The canvas, under a capability (and OpenClaw's path for it)."""
CAPABILITY_TTL_S = 24 * 3600.0
"""How long a canvas capability works: a day of an open connection (any reconnect gets a
fresh one; the desktop app mints one each time it shows the canvas)."""

_LABEL = b"moltis canvas capability v1\0"
_MAC_BYTES = 16
_NONCE_BYTES = 8
_RAW_BYTES = 8 + _NONCE_BYTES + _MAC_BYTES
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{(_RAW_BYTES * 8 + 5) // 6}}}")
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class CanvasCapabilities:
    """Mints and checks canvas capability tokens."""

    def __init__(self, clock: Clock, ttl_s: float = CAPABILITY_TTL_S) -> None:
        self._clock = clock
        self.ttl_s = ttl_s
        self._key = secrets.token_bytes(32)

    def mint(self, ttl_s: float | None = None) -> str:
        """A new token, good for `ttl_s` seconds (the default lifetime when None)."""
        life = self.ttl_s if ttl_s is None else ttl_s
        expires_ms = max(0, int((self._clock.monotonic() + life) * 1000))
        body = struct.pack(">Q", expires_ms) + secrets.token_bytes(_NONCE_BYTES)
        raw = body + self._mac(body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def remaining_s(self, token: str) -> float | None:
        """Seconds `token` has left; None when it is malformed, forged or expired (which
        the caller cannot tell apart: all get the same answer)."""
        if not _TOKEN.fullmatch(token):
            return None
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode():
            return None  # one spelling per token (the last character has spare bits)
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        (expires_ms,) = struct.unpack(">Q", body[:8])
        left = expires_ms / 1000 - self._clock.monotonic()
        return left if left > 0 else None

    def rotate(self) -> None:
        """A new key: every token minted so far stops working."""
        self._key = secrets.token_bytes(32)

    def _mac(self, body: bytes) -> bytes:
        # hmac.digest: the one-shot C path (a token is minted for every hello-ok).
        return hmac.digest(self._key, _LABEL + body, "sha256")[:_MAC_BYTES]


class CanvasSurface:
    """The canvas's share of the gateway state: its capabilities and its live sockets."""

    def __init__(self, clock: Clock) -> None:
        self.capabilities = CanvasCapabilities(clock)
        self.live = LiveHub()

    def url(self, base_url: str, ttl_s: float | None = None) -> str:
        """A new capability URL on `base_url` (`http(s)://host:port`), as `hello-ok` gives:
        append `/__openclaw__/canvas/<path>` for a page."""
        return f"{base_url.rstrip('/')}{CAP_PREFIX}/{self.capabilities.mint(ttl_s)}"

    def page_url(self, base_url: str, path: str = "", ttl_s: float | None = None) -> str:
        """A new capability URL of one canvas page (`path` relative to the canvas folder,
        already URL-quoted)."""
        return f"{self.url(base_url, ttl_s)}{CANVAS_PATH}/{path.lstrip('/')}"


def request_base_url(request: web.Request, fallback: str) -> str:
    """`scheme://host` as the client reached us (its Host header, so a phone on the LAN gets
    an address it can reach); `fallback` when the header is missing or not a plain host."""
    host = request.headers.get("Host", "")
    if not _HOST.fullmatch(host):
        return fallback
    return f"{request.scheme}://{host}"
