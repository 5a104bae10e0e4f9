"""Every HTTP route on the gateway's port, in one place: the probes, the WebSocket and the
web app at `/`, the OpenAI-compatible endpoint, the web app's files and the canvas."""

from __future__ import annotations

from aiohttp import web

from moltis_desktop.gateway.canvas_host import add_canvas_routes
from moltis_desktop.gateway.http import healthz, readyz
from moltis_desktop.gateway.openai_http import add_openai_routes
from moltis_desktop.gateway.policy import Access, add_route
from moltis_desktop.gateway.state import STATE_KEY
from moltis_desktop.gateway.webui import add_webui_routes, index
from moltis_desktop.gateway.ws import websocket_handler


async def root(request: web.Request) -> web.StreamResponse:
    """`/`: the WebSocket endpoint (OpenClaw clients connect here), and the web app for a
    browser."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket_handler(request.app[STATE_KEY], request)
    return await index(request)


def add_routes(app: web.Application) -> None:
    """Register the gateway's HTTP routes."""
    for path in ("/healthz", "/health"):
        add_route(app, "*", path, healthz, Access.PUBLIC)
    for path in ("/readyz", "/ready"):
        add_route(app, "*", path, readyz, Access.PUBLIC)
    add_route(app, "GET", "/", root, Access.WEBSOCKET)
    add_openai_routes(app)
    add_webui_routes(app)
    add_canvas_routes(app)
