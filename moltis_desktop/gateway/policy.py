"""The HTTP security policy: every route on the gateway's port declares who may call it.

A route is registered with `add_route(app, method, path, handler, Access.X)`; the security
middleware (`gateway/http_security.py`) reads the declaration and applies it before the
handler runs. A route registered any other way has no declaration, and the middleware
refuses it (fail closed); a test walks the route table to catch that early.

- `PUBLIC`: anyone who may reach the port (probes, the web app's static files).
- `TOKEN`: the gateway's token or password as `Authorization: Bearer` (in auth mode `none`,
  a local client without one). Checked under the failed-auth throttle.
- `CAPABILITY`: an unguessable token in the URL that the route itself checks (the canvas:
  its pages run sandboxed, with `Origin: null`, so they cannot send a header or a cookie).
- `APP`: the gateway's own web app (a same-origin request from a page it served).
- `WEBSOCKET`: `/`, where the `connect` handshake decides (and the web app for a browser).
- `OWNER`: only over the owner socket (`owner_socket.py`), from a process of the gateway's
  own user as the kernel reports it; refused over TCP whatever the request carries.

Over the owner socket every `TOKEN` route is open too: that caller is the owner.

Whatever the access, every request passes the Host allowlist and the origin policy first.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.StrEnum):
    """Who may call a route."""

    PUBLIC = "public"
    TOKEN = "token"
    CAPABILITY = "capability"
    APP = "app"
    WEBSOCKET = "websocket"
    OWNER = "owner"


_ACCESS_ATTR = "_moltis_access"
_JSON_ATTR = "_moltis_json_body"


def declare(handler: Handler, access: Access, *, json_body: bool = False) -> Handler:
    """`handler` itself, marked with its access (no wrapper: nothing more runs per request).
    `json_body`: the route takes a JSON body, so anything not sent as `application/json` is
    refused (415) before the route runs: a page's `text/plain` form post needs no CORS
    preflight, a JSON one does. One function serves one policy: declaring it again with
    another is a programming error."""
    declared = (access_of(handler), takes_json(handler))
    if declared[0] is not None and declared != (access, json_body):
        name = getattr(handler, "__name__", handler)
        raise ValueError(f"{name} is already declared {declared[0]}; one policy per handler")
    setattr(handler, _ACCESS_ATTR, access)
    setattr(handler, _JSON_ATTR, json_body)
    return handler


def access_of(handler: object) -> Access | None:
    """The access a route's handler was declared with; None when it was not."""
    return getattr(handler, _ACCESS_ATTR, None)


def takes_json(handler: object) -> bool:
    """Whether a route was declared with a JSON body."""
    return bool(getattr(handler, _JSON_ATTR, False))


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    access: Access,
    *,
    json_body: bool = False,
) -> web.AbstractRoute:
    """Register `handler` for `method` and `path` under `access` (see `declare`). GET routes
    answer HEAD too."""
    declared = declare(handler, access, json_body=json_body)
    if method == "GET":
        return app.router.add_get(path, declared)
    return app.router.add_route(method, path, declared)
