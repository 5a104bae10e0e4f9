"""The canvas host: the default agent's `workspace/canvas/` folder over HTTP, under a
capability URL (`/__openclaw__/cap/<token>/__openclaw__/canvas/<path>`, as OpenClaw's
gateway serves it; the tokens are canvas_access.py's), with live reload over a WebSocket
(`…/__openclaw__/canvas/__live`, canvas_live.py). Without a valid capability nothing is
served (401), and dotfiles never are.

OpenClaw serves it on a port of its own (18793) so that agent-written pages never share
the gateway's origin. Here it shares the port, and every canvas response carries a CSP
`sandbox` (without `allow-same-origin`): the page runs in an opaque origin, so it cannot
read the web app's storage (where a remembered token lives), and a WebSocket it opens to
the gateway arrives with `Origin: null`, which `connect` refuses.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path, PurePosixPath

from aiohttp import web

from moltis_desktop.gateway.canvas_access import CANVAS_PATH, CAP_PREFIX
from moltis_desktop.gateway.canvas_live import WatcherFailedError
from moltis_desktop.gateway.limits import mark_authenticated
from moltis_desktop.gateway.policy import Access, add_route
from moltis_desktop.gateway.state import STATE_KEY, GatewayState

PREFIX = CANVAS_PATH
"""The canvas's path under a capability (`<capability URL><PREFIX>/<page>`); on its own, the
old unauthenticated path, which now only says where the capability comes from."""
CANVAS_CSP = (
    "sandbox allow-scripts allow-forms allow-popups allow-modals; "
    "default-src 'self' data: blob: 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)
EXPIRED_CLOSE_CODE = 4001
"""The live socket's close code when its capability expires (the page stops reconnecting)."""
_LIVE_SCRIPT = """(() => {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "%s";
  let delay = 1000;
  const open = () => {
    const ws = new WebSocket(url);
    ws.onopen = () => { delay = 1000; };
    ws.onmessage = (m) => { if (m.data === "reload") location.reload(); };
    ws.onclose = (e) => {
      if (e.code === %d) return;  // the capability expired: the app opens a new one
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 30000);
    };
  };
  open();
})();
"""
EMPTY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Canvas</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:90vh;
color:#5b6170;background:#f7f7f9}</style></head>
<body><p>The canvas is empty. Ask Moltis to show you something.</p></body></html>
"""
REFUSED = "canvas capability missing, invalid or expired\n"
MOVED = (
    "The canvas is served at a capability URL. Connect to the gateway as an operator with "
    "operator.read: hello-ok's pluginSurfaceUrls.canvas (canvasHostUrl in protocol 3) is "
    f"<base>{CAP_PREFIX}/<token>; pages are at <base>{CAP_PREFIX}/<token>{CANVAS_PATH}/<path>. "
    "The desktop app's Canvas window opens it for you.\n"
)


def canvas_dir(gateway: GatewayState) -> Path:
    """The default agent's `canvas/` folder."""
    settings = gateway.settings
    agent_id = settings.agents.default
    agent = next((a for a in settings.agents.list if a.id == agent_id), None)
    if agent is not None and agent.workspace:
        return Path(agent.workspace).expanduser() / "canvas"
    return gateway.state_dir / "workspace" / agent_id / "canvas"


def _base(token: str) -> str:
    """The canvas's path under `token` (a checked token: URL- and HTML-safe)."""
    return f"{CAP_PREFIX}/{token}{CANVAS_PATH}"


def live_script(token: str) -> str:
    """The live-reload script of pages opened with `token` (baked in: a sandboxed page has
    no other way to present it)."""
    return _LIVE_SCRIPT % (f"{_base(token)}/__live", EXPIRED_CLOSE_CODE)


def _inject(html: bytes, token: str) -> bytes:
    tag = f'<script src="{_base(token)}/__live.js"></script>'.encode()
    lower = html.lower()
    at = lower.rfind(b"</body>")
    return html[:at] + tag + html[at:] if at >= 0 else html + tag


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CANVAS_CSP,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the token stays out of other sites' logs
    }


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers=_headers())


_TEXT_TYPES = frozenset({"application/json", "image/svg+xml", "application/xml"})


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in parts)


def _checked(request: web.Request) -> tuple[GatewayState, str, float] | None:
    """(state, token, seconds left) when the request's capability is good."""
    gateway = request.app[STATE_KEY]
    token = request.match_info["token"]
    left = gateway.canvas.capabilities.remaining_s(token)
    if left is None:
        return None
    # A good capability authenticates the connection: it leaves the caps on unauthenticated
    # connections (live sockets have their own, `MAX_LIVE_SOCKETS`).
    mark_authenticated(request)
    return gateway, token, left


async def enter(request: web.Request) -> web.StreamResponse:
    """The capability URL itself (or the canvas without its slash): on to the canvas home,
    so that the page's relative links resolve under the capability."""
    checked = _checked(request)
    if checked is None:
        return _text(401, REFUSED)
    return web.Response(status=302, headers={**_headers(), "Location": f"{_base(checked[1])}/"})


async def serve(request: web.Request) -> web.StreamResponse:
    """A file of the canvas folder, the live script, or the live socket."""
    checked = _checked(request)
    if checked is None:
        return _text(401, REFUSED)
    gateway, token, left = checked
    rel = request.match_info.get("path", "")
    if rel == "__live.js":
        return web.Response(
            text=live_script(token), content_type="text/javascript", headers=_headers()
        )
    if rel == "__live":
        return await live(request, gateway, left)
    if _hidden(PurePosixPath(rel).parts):
        return _text(404, "not found\n")
    root = canvas_dir(gateway).resolve()
    target = (root / rel).resolve()
    if target != root and (root not in target.parents or _hidden(target.relative_to(root).parts)):
        return _text(404, "not found\n")
    if target == root or target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        if target == root / "index.html":
            return web.Response(
                body=_inject(EMPTY_PAGE.encode(), token),
                content_type="text/html",
                headers=_headers(),
            )
        return _text(404, "not found\n")
    body = await asyncio.to_thread(target.read_bytes)
    ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if ctype == "text/html":
        body = _inject(body, token)
    # The agent writes UTF-8 and often leaves out <meta charset>: without a charset here the
    # browser would read "21°C" as "21Â°C".
    textual = ctype.startswith("text/") or ctype in _TEXT_TYPES
    return web.Response(
        body=body,
        content_type=ctype,
        charset="utf-8" if textual else None,
        headers=_headers(),
    )


async def live(request: web.Request, gateway: GatewayState, left_s: float) -> web.StreamResponse:
    """Sends `reload` whenever a file under the canvas folder changes (not under
    `snapshots/`, not a dotfile), until the socket closes or its capability expires."""
    origin = request.headers.get("Origin")
    if origin not in (None, "null", f"{request.scheme}://{request.host}"):
        return _text(403, "canvas pages connect from their sandbox (Origin: null)\n")
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        return _text(400, "the live socket is a WebSocket\n")
    if gateway.draining:
        return _text(503, "gateway is shutting down\n")
    hub = gateway.canvas.live
    watch = hub.admit(canvas_dir(gateway).resolve())
    if watch is None:
        return _text(503, "too many live canvas sockets\n")
    joined = False
    try:
        try:
            await hub.ready(watch)
        except (WatcherFailedError, TimeoutError):
            return _text(503, "the canvas folder cannot be watched\n")
        await ws.prepare(request)
        hub.join(watch, ws)
        joined = True
        try:
            async with asyncio.timeout(left_s):
                async for _ in ws:  # pages send nothing; this waits for the close
                    pass
        except TimeoutError:
            await ws.close(code=EXPIRED_CLOSE_CODE, message=b"canvas capability expired")
    finally:
        hub.leave(watch, ws if joined else None)
    return ws


async def other_surface(request: web.Request) -> web.StreamResponse:
    """Anything else under a capability (OpenClaw's A2UI host, …): not served here."""
    if _checked(request) is None:
        return _text(401, REFUSED)
    return _text(404, "not found\n")


async def moved(request: web.Request) -> web.StreamResponse:
    """The old unauthenticated path: where the capability URL comes from."""
    return _text(401, MOVED)


async def _close_live_sockets(app: web.Application) -> None:
    await app[STATE_KEY].canvas.live.close_sockets()


async def _stop_watchers(app: web.Application) -> None:
    await app[STATE_KEY].canvas.live.stop()


def add_canvas_routes(app: web.Application) -> None:
    cap = CAP_PREFIX + "/{token}"
    for path in (cap, cap + "/", cap + CANVAS_PATH):
        add_route(app, "GET", path, enter, Access.CAPABILITY)
    add_route(app, "GET", cap + CANVAS_PATH + "/{path:.*}", serve, Access.CAPABILITY)
    add_route(app, "GET", cap + "/{rest:.*}", other_surface, Access.CAPABILITY)
    for path in (PREFIX, PREFIX + "/", PREFIX + "/{path:.*}"):
        add_route(app, "GET", path, moved, Access.CAPABILITY)
    app.on_shutdown.append(_close_live_sockets)
    app.on_cleanup.append(_stop_watchers)
