"""The HTTP security layer: one middleware that applies each route's declared policy
(`policy.py`) before the route runs, with the rules the WebSocket handshake uses.

In order, for every request:
1. the `Host` allowlist (421 for a name this gateway does not answer to: DNS rebinding);
2. the origin policy (403 for a page on an origin the WebSocket would refuse; CORS
   preflights answered here). WebSocket upgrades are judged at `connect`, which answers
   with the protocol's own error;
3. the route's access: `TOKEN` (Bearer, under the failed-auth throttle, or the owner
   socket), `APP` (a same-origin request), `CAPABILITY` (the route checks its token),
   `OWNER` (the owner socket only), `PUBLIC`, `WEBSOCKET`. A route without a declaration
   is refused (500), never served;
4. the security headers on whatever is answered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from moltis_desktop.core.logging import security_event
from moltis_desktop.gateway.limits import is_owner, mark_authenticated
from moltis_desktop.gateway.policy import Access, Handler, access_of, takes_json
from moltis_desktop.gateway.state import STATE_KEY, GatewayState
from moltis_desktop.gateway.trust import check_origin, client_address, origin_listed
from moltis_desktop.protocol.frames import encode_json

_LOGGER = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""On every answer (routes add their own CSP and caching)."""
ERROR_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
_CLIENT_KEY: web.RequestKey[tuple[str, bool]] = web.RequestKey("moltis-client", tuple)


def json_answer(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer with the headers every non-page answer carries (never cached)."""
    return web.Response(
        status=status,
        body=encode_json(body),
        content_type="application/json",
        charset="utf-8",
        headers={**ERROR_HEADERS, **(headers or {})},
    )


def error_body(
    message: str, code: str | None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    """The gateway's one JSON error shape, OpenAI's: `{"error": {message, type, param, code}}`."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error(
    status: int,
    message: str,
    code: str | None,
    *,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error answer in `error_body`'s shape."""
    return json_answer(status, error_body(message, code, kind), headers)


OWNER_ADDRESS = "unix"
"""The client address of a request over the owner socket (in logs and throttle keys)."""


def client(request: web.Request) -> tuple[str, bool]:
    """(the caller's address, whether it is local), through `gateway.trusted_proxies`. Over
    the owner socket, `("unix", True)`: the kernel vouched for the peer, headers say
    nothing about it."""
    known = request.get(_CLIENT_KEY)
    if known is None and is_owner(request):
        known = request[_CLIENT_KEY] = (OWNER_ADDRESS, True)
    if known is None:
        gateway = request.app[STATE_KEY]
        known = client_address(
            request.remote, request.headers, gateway.settings.gateway.trusted_proxies
        )
        request[_CLIENT_KEY] = known
    return known


def client_is_local(request: web.Request) -> bool:
    """The caller is on this machine and not behind an undeclared proxy."""
    return client(request)[1]


def same_origin(request: web.Request) -> bool:
    """The request comes from a page this gateway served (its Origin is our own address)."""
    origin = request.headers.get("Origin")
    if not origin:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


# ---------------------------------------------------------------------- the secret


def bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


async def authorize(gateway: GatewayState, request: web.Request) -> web.Response | None:
    """None when the request carries the gateway's secret (or, in auth mode `none`, comes
    from a local client, or comes over the owner socket); else the answer. Every comparison
    goes through the failed-auth throttle the WebSocket uses: a locked-out address is
    answered 429 without one."""
    if is_owner(request):
        return None  # the kernel checked the peer's uid when the connection opened
    secret = gateway.shared_secret
    ip, local = client(request)
    noun = "password" if secret.mode == "password" else "token"
    if secret.mode == "none":
        if local:
            return None
        return error(
            401,
            "this gateway has auth mode `none` and accepts only clients on this machine "
            "(set gateway.auth.mode to `token`)",
            "invalid_api_key",
        )
    throttle = gateway.auth_throttle
    retry_ms = throttle.retry_after_ms(ip)
    if retry_ms is not None:
        security_event("auth.rate_limited", ip=ip, path=request.path)
        return error(
            429,
            f"too many failed attempts from {ip}; retry in {math.ceil(retry_ms / 1000)} s",
            "auth_rate_limited",
            kind="rate_limit_error",
            headers={"Retry-After": str(math.ceil(retry_ms / 1000))},
        )
    given = bearer(request)
    if given is not None and secret.check(given) is None:
        throttle.record_success(ip)
        mark_authenticated(request)
        return None
    delay = throttle.record_failure(ip)
    security_event("auth.failed", ip=ip, path=request.path, reason=f"{noun}_mismatch")
    if delay:
        await asyncio.sleep(delay)
    return error(
        401,
        f"missing or wrong gateway {noun}: send `Authorization: Bearer <gateway {noun}>` "
        "(the OpenAI SDKs send their api_key this way)",
        "invalid_api_key",
    )


# ---------------------------------------------------------------------- the middleware


def _origin_refusal(
    gateway: GatewayState, request: web.Request, access: Access | None
) -> str | None:
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if access is Access.CAPABILITY and origin == "null":
        return None  # sandboxed canvas pages; their capability is in the URL
    return check_origin(
        origin,
        request.headers.get("Host"),
        client_is_local(request),
        gateway.settings.gateway.cors.allowed_origins,
    )


def _preflight(gateway: GatewayState, request: web.Request) -> web.Response:
    origin = request.headers["Origin"]
    return web.Response(
        status=204,
        headers={
            **SECURITY_HEADERS,
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


async def _admit(
    gateway: GatewayState, request: web.Request, access: Access | None
) -> web.StreamResponse | None:
    settings = gateway.settings.gateway
    if not gateway.hosts.allowed(
        request.headers.get("Host"), bound=gateway.host, configured=settings.allowed_hosts
    ):
        security_event("http.host_refused", ip=client(request)[0], path=request.path)
        return error(
            421,
            "this gateway does not answer to that host name (add it to gateway.allowed_hosts "
            "if you reach the gateway by it)",
            "host_not_allowed",
        )
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if access is Access.WEBSOCKET and upgrade:
        return None  # `connect` checks the origin and answers in the protocol's terms
    why = _origin_refusal(gateway, request, access)
    if why is not None:
        return error(
            403,
            f"{why}: this page's origin may not call the gateway (open the web app from the "
            "gateway's own address, or add the origin to gateway.cors.allowed_origins)",
            "origin_not_allowed",
        )
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(gateway, request)
    if access is None:
        if request.match_info.http_exception is not None:
            return None  # 404 / 405 from the router
        _LOGGER.error("HTTP route %s has no declared access; refusing it", request.path)
        return error(500, "this route has no security policy", "no_policy", kind="server_error")
    if takes_json(request.match_info.route.handler) and request.content_type != "application/json":
        return error(
            415,
            f"send the body as JSON (Content-Type: application/json), not {request.content_type}",
            "unsupported_media_type",
        )
    if access is Access.TOKEN:
        return await authorize(gateway, request)
    if access is Access.OWNER and not is_owner(request):
        security_event("http.owner_only", ip=client(request)[0], path=request.path)
        return error(
            403,
            "this route answers only on the gateway's local socket, to the user running it "
            "(`moltis dashboard` on the gateway's machine uses it)",
            "owner_socket_required",
        )
    if access is Access.APP and not same_origin(request):
        return error(403, "only the gateway's own web app may call this", "same_origin_required")
    return None


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the route's declared policy (see the module docstring)."""
    gateway = request.app[STATE_KEY]
    access = access_of(request.match_info.route.handler)
    refusal = await _admit(gateway, request, access)
    if refusal is not None:
        return refusal
    response = await handler(request)
    if response.prepared:  # a WebSocket or a stream: its headers are gone already
        return response
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    origin = request.headers.get("Origin")
    if (
        origin
        and origin != "null"
        and (
            same_origin(request)
            or origin_listed(
                origin.rstrip("/").lower(), gateway.settings.gateway.cors.allowed_origins
            )
        )
    ):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response
