"""The probes: `/healthz` (liveness) and `/readyz` (readiness). Routes are assembled in
`routes.py`; what every route shares (Host, origin, auth) is in `http_security.py`."""

from __future__ import annotations

from aiohttp import web

from moltis_desktop.gateway.http_security import ERROR_HEADERS, client_is_local
from moltis_desktop.gateway.state import STATE_KEY
from moltis_desktop.protocol.frames import encode_json

_PROBE_METHODS = ("GET", "HEAD")


def _json(status: int, body: object) -> web.Response:
    return web.Response(
        status=status,
        body=encode_json(body),
        content_type="application/json",
        charset="utf-8",
        headers=ERROR_HEADERS,
    )


def _probe_guard(request: web.Request) -> web.Response | None:
    if request.method not in _PROBE_METHODS:
        return web.Response(
            status=405,
            text="Method Not Allowed\n",
            headers={"Allow": "GET, HEAD", **ERROR_HEADERS},
        )
    return None


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process is up and answering (no auth)."""
    return _probe_guard(request) or _json(200, {"ok": True, "status": "live"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 once the gateway accepts clients, 503 while starting or stopping.

    Details (uptime, event loop, agent, a config error) go to callers on this machine only.
    No credential is looked at here: a probe that compared a Bearer token would answer a
    right guess differently from a wrong one, without the throttle."""
    guard = _probe_guard(request)
    if guard is not None:
        return guard
    gateway = request.app[STATE_KEY]
    ready = gateway.ready and not gateway.draining
    if not client_is_local(request):
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
