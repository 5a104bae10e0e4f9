"""The canvas host: the default agent's `workspace/canvas/` folder over HTTP at
`/__openclaw__/canvas/` (OpenClaw's path), with live reload over a WebSocket.

OpenClaw serves it on a port of its own (18793) so that agent-written pages never share
the gateway's origin. Here it shares the port, and every canvas response carries a CSP
`sandbox` (without `allow-same-origin`): the page runs in an opaque origin, so it cannot
read the web app's storage (where a remembered token lives), and a WebSocket it opens to
the gateway arrives with `Origin: null`, which `connect` refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from pathlib import Path

from aiohttp import WSMsgType, web

from moltis_desktop.gateway.policy import Access, add_route
from moltis_desktop.gateway.state import STATE_KEY, GatewayState

PREFIX = "/__openclaw__/canvas"
CANVAS_CSP = (
    "sandbox allow-scripts allow-forms allow-popups allow-modals; "
    "default-src 'self' data: blob: 'unsafe-inline'; connect-src 'self' ws: wss:; "
    "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'"
)
LIVE_SCRIPT = f"""(() => {{
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.host + "{PREFIX}/__live";
  let ws;
  const open = () => {{
    ws = new WebSocket(url);
    ws.onmessage = (m) => {{ if (m.data === "reload") location.reload(); }};
    ws.onclose = () => setTimeout(open, 1000);
  }};
  open();
}})();
"""
EMPTY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Canvas</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:90vh;
color:#5b6170;background:#f7f7f9}</style></head>
<body><p>The canvas is empty. Ask Moltis to show you something.</p></body></html>
"""
_POLL_S = 0.4


def canvas_dir(gateway: GatewayState) -> Path:
    """The default agent's `canvas/` folder."""
    settings = gateway.settings
    agent_id = settings.agents.default
    agent = next((a for a in settings.agents.list if a.id == agent_id), None)
    if agent is not None and agent.workspace:
        return Path(agent.workspace).expanduser() / "canvas"
    return gateway.state_dir / "workspace" / agent_id / "canvas"


def _inject(html: bytes) -> bytes:
    tag = f'<script src="{PREFIX}/__live.js"></script>'.encode()
    lower = html.lower()
    at = lower.rfind(b"</body>")
    return html[:at] + tag + html[at:] if at >= 0 else html + tag


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CANVAS_CSP,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


async def serve(request: web.Request) -> web.StreamResponse:
    gateway = request.app[STATE_KEY]
    rel = request.match_info.get("path", "")
    if rel == "__live.js":
        return web.Response(text=LIVE_SCRIPT, content_type="text/javascript", headers=_headers())
    if rel == "__live":
        return await live(request, gateway)
    root = canvas_dir(gateway).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        return web.Response(status=404, text="not found\n", headers=_headers())
    if target == root or target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        if target == root / "index.html":
            return web.Response(
                body=_inject(EMPTY_PAGE.encode()), content_type="text/html", headers=_headers()
            )
        return web.Response(status=404, text="not found\n", headers=_headers())
    body = await asyncio.to_thread(target.read_bytes)
    ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if ctype == "text/html":
        body = _inject(body)
    return web.Response(body=body, content_type=ctype, headers=_headers())


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(
            sorted(
                (str(p), p.stat().st_mtime_ns, p.stat().st_size)
                for p in folder.rglob("*")
                if p.is_file() and "snapshots" not in p.parts
            )
        )
    except OSError:
        return ()


async def live(request: web.Request, gateway: GatewayState) -> web.StreamResponse:
    """Sends `reload` whenever a file under the canvas folder changes."""
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    folder = canvas_dir(gateway)
    last = await asyncio.to_thread(_stamp, folder)

    async def watch() -> None:
        nonlocal last
        while not ws.closed:
            await asyncio.sleep(_POLL_S)
            now = await asyncio.to_thread(_stamp, folder)
            if now != last:
                last = now
                await ws.send_str("reload")

    watcher = asyncio.create_task(watch())
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return ws


def add_canvas_routes(app: web.Application) -> None:
    for path in (PREFIX, PREFIX + "/", PREFIX + "/{path:.*}"):
        add_route(app, "GET", path, serve, Access.CAPABILITY)
