"""HTTP on the gateway's port: the probes, CORS, and what every HTTP route shares (the
security headers, loopback and Bearer checks). Routes are assembled in `routes.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from moltis_desktop.gateway.auth import is_loopback
from moltis_desktop.gateway.handshake import origin_listed
from moltis_desktop.gateway.state import STATE_KEY, GatewayState
from moltis_desktop.protocol.frames import encode_json

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PROBE_METHODS = ("GET", "HEAD")


def _json(status: int, body: object) -> web.Response:
    return web.Response(
        status=status,
        body=encode_json(body),
        content_type="application/json",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def _probe_guard(request: web.Request) -> web.Response | None:
    if request.method not in _PROBE_METHODS:
        return web.Response(
            status=405,
            text="Method Not Allowed\n",
            headers={"Allow": "GET, HEAD", **SECURITY_HEADERS},
        )
    return None


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process is up and answering (no auth)."""
    return _probe_guard(request) or _json(200, {"ok": True, "status": "live"})


def is_direct_loopback(request: web.Request) -> bool:
    """The caller is on this machine and not behind a local reverse proxy."""
    return is_loopback(request.remote) and "X-Forwarded-For" not in request.headers


def bearer_matches(gateway: GatewayState, request: web.Request) -> bool:
    """`Authorization: Bearer` carries the gateway's token (or password, in password mode),
    compared in constant time. Never true in auth mode `none`: there is nothing to match."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    secret = gateway.shared_secret
    if scheme.lower() != "bearer" or not given or secret.mode == "none":
        return False
    return secret.check(given.strip()) is None


def _may_see_details(gateway: GatewayState, request: web.Request) -> bool:
    return is_direct_loopback(request) or bearer_matches(gateway, request)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 once the gateway accepts clients, 503 while starting or stopping."""
    guard = _probe_guard(request)
    if guard is not None:
        return guard
    gateway = request.app[STATE_KEY]
    ready = gateway.ready and not gateway.draining
    if not _may_see_details(gateway, request):
        return _json(200 if ready else 503, {"ready": ready})
    failing = ["gateway-draining"] if gateway.draining else []
    body = {
        "ready": ready,
        "failing": failing,
        "uptimeMs": gateway.uptime_ms(),
        "eventLoop": gateway.loop_monitor.snapshot(gateway.clock.now_ms()),
        # The agent side loads just after the listener is up; its methods answer "retry
        # shortly" meanwhile, so it does not hold readiness back.
        "agent": "ready"
        if gateway.agent is not None
        else "starting"
        if gateway.agent_loading
        else "off",
    }
    if gateway.config.error is not None:
        # A broken config file does not make the gateway unready (it runs on the last good
        # config); it is reported here and on `health`.
        body["configError"] = str(gateway.config.error)
    return _json(200 if ready else 503, body)


def _allowed_origin(gateway: GatewayState, request: web.Request, origin: str) -> bool:
    normalized = origin.rstrip("/").lower()
    if origin_listed(normalized, gateway.settings.gateway.cors.allowed_origins):
        return True
    # Same origin: the page was served by this gateway.
    return normalized in (f"http://{request.host}".lower(), f"https://{request.host}".lower())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for the HTTP endpoints: same-origin only unless `gateway.cors.allowed_origins`
    lists more. (WebSocket upgrades are not subject to CORS; their Origin is checked at
    `connect`.)"""
    origin = request.headers.get("Origin")
    gateway = request.app[STATE_KEY]
    if origin is None or request.headers.get("Upgrade", "").lower() == "websocket":
        return await handler(request)
    allowed = _allowed_origin(gateway, request, origin)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return web.Response(status=403, text="origin not allowed\n")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
                # Whatever the page asks for (the OpenAI SDK adds x-stainless-*, clients add
                # x-moltis-* routing headers): the origin is already allowed.
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response
