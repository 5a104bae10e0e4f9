"""The embedded web app: static assets from the package, sign-in tickets, method metadata.

Everything the page needs ships in `moltis_desktop/web/` (no CDN, no build step): the files
are read once, kept in memory with a gzip copy and a strong ETag, and served with a strict
Content-Security-Policy (no inline script, no eval, only this origin).

Sign-in without the credential in a visible URL: a local client that holds the credential
(the desktop app in-process, `moltis dashboard` over HTTP with `Authorization: Bearer`)
mints a one-time *ticket*, opens `/#ticket=…`, and the page trades the ticket for the
credential with a same-origin POST, then removes it from the address bar. A ticket works
once and for one minute, so a URL left in a history or a screenshot is worthless. A
process of the owner's user that holds no credential (no keyring, no passphrase) gets a
ticket over the owner socket instead (`POST /api/local/sign-in`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from moltis_desktop.gateway.canvas_access import request_base_url
from moltis_desktop.gateway.http_security import error
from moltis_desktop.gateway.policy import Access, add_route
from moltis_desktop.gateway.registry import MethodTable
from moltis_desktop.gateway.state import STATE_KEY, GatewayState
from moltis_desktop.gateway.tickets import TICKET_TTL_MS
from moltis_desktop.protocol.frames import encode_json

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; media-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
"""No inline script or style, no eval, nothing from another origin. (`connect-src 'self'`
covers the page's own ws:// and wss:// origin.)"""
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), geolocation=(), microphone=(self)",
}
_COMPRESSIBLE = (".html", ".js", ".mjs", ".css", ".json", ".svg", ".txt", ".md")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")


@dataclass
class Asset:
    body: bytes
    etag: str
    content_type: str
    compressible: bool
    gzipped: bytes | None = None
    """Filled in the background after start-up (see `compress_assets`)."""


def load_assets() -> dict[str, Asset]:
    """Every file under `moltis_desktop/web`, by its path relative to it (read, not yet
    compressed: gzip -9 of them all takes ~0.4 s, which no request waits for)."""
    root = resources.files("moltis_desktop") / "web"
    assets: dict[str, Asset] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for item in folder.iterdir():
            rel = f"{prefix}{item.name}"
            if item.is_dir():
                stack.append((item, rel + "/"))
                continue
            body = item.read_bytes()
            ctype = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            compressible = item.name.endswith(_COMPRESSIBLE) and len(body) > 512
            assets[rel] = Asset(body, etag, ctype, compressible)
    return assets


def compress_assets(assets: dict[str, Asset]) -> None:
    """Gzip every compressible asset (run in a thread after the first request; an asset
    asked for before the pass got to it is compressed on the spot)."""
    for asset in assets.values():
        if asset.compressible and asset.gzipped is None:
            asset.gzipped = gzip.compress(asset.body, compresslevel=9, mtime=0)


class WebAssets:
    """The web app's files: read on the first request for one (an idle gateway that nobody
    opened in a browser does not hold them), then gzipped in the background."""

    def __init__(self) -> None:
        self._assets: dict[str, Asset] | None = None
        self._compressing: asyncio.Future[None] | None = None

    def get(self, path: str) -> Asset | None:
        if self._assets is None:
            self._assets = load_assets()
            self._compressing = asyncio.get_running_loop().run_in_executor(
                None, compress_assets, self._assets
            )
        return self._assets.get(path)

    async def aclose(self) -> None:
        """Let a background compression finish (the executor is going away)."""
        if self._compressing is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._compressing


ASSETS_KEY: web.AppKey[WebAssets] = web.AppKey("webui-assets", WebAssets)


def _gateway(request: web.Request) -> GatewayState:
    return request.app[STATE_KEY]


def serve_asset(request: web.Request, path: str) -> web.Response:
    asset = request.app[ASSETS_KEY].get(path)
    if asset is None or path.startswith("tests/"):
        return web.Response(status=404, text="not found\n", headers=PAGE_HEADERS)
    headers = {
        **PAGE_HEADERS,
        "ETag": asset.etag,
        # Revalidate every time (a 304 is cheap on loopback); the app is updated in place.
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.compressible and "gzip" in request.headers.get("Accept-Encoding", ""):
        if asset.gzipped is None:  # asked for before the background pass got to it
            asset.gzipped = gzip.compress(asset.body, compresslevel=9, mtime=0)
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, content_type=asset.content_type, headers=headers)


async def index(request: web.Request) -> web.Response:
    return serve_asset(request, "index.html")


async def static(request: web.Request) -> web.Response:
    return serve_asset(request, request.match_info["path"])


async def mint_ticket(request: web.Request) -> web.Response:
    """`POST /ui/ticket` with `Authorization: Bearer <credential>`: a one-time sign-in
    ticket for `/#ticket=…` (what `moltis dashboard` opens). The security middleware has
    checked the credential (route access `TOKEN`) and the `Host` (its allowlist), so the
    link is built from the name the caller reached the gateway by."""
    gateway = _gateway(request)
    ticket = gateway.ui_tickets.mint()
    base = request_base_url(request, gateway.http_url)  # the connection's own TLS, not headers
    return _json(200, {"ticket": ticket, "url": f"{base}/#ticket={ticket}"})


async def local_sign_in(request: web.Request) -> web.Response:
    """`POST /api/local/sign-in`, over the owner socket only (route access `OWNER`): a
    one-time sign-in link to the web app on the gateway's TCP address, for `moltis
    dashboard` on a machine where the CLI cannot read the token (no keyring, no
    passphrase). The page trades the ticket for the credential as with `/ui/ticket`."""
    gateway = _gateway(request)
    ticket = gateway.ui_tickets.mint()
    return _json(
        200,
        {
            "ticket": ticket,
            "url": f"{gateway.http_url}/#ticket={ticket}",
            "expiresInMs": TICKET_TTL_MS,
        },
    )


class _Redeem(msgspec.Struct):
    ticket: str


async def redeem_ticket(request: web.Request) -> web.Response:
    """`POST /ui/redeem {"ticket"}` from the page itself (route access `APP`: a same-origin
    request): the credential, once."""
    gateway = _gateway(request)
    try:
        body = msgspec.json.decode(await request.read(), type=_Redeem)
    except (msgspec.DecodeError, ValueError):
        return error(400, 'expected a JSON body {"ticket": "…"}', "invalid_body")
    if not gateway.ui_tickets.redeem(body.ticket):
        return error(
            401,
            "this sign-in link has expired or was already used; open a new one",
            "ticket_invalid",
        )
    secret = gateway.shared_secret
    auth: dict[str, str] = {}
    if secret.mode == "token" and secret.token:
        auth["token"] = secret.token
    elif secret.mode == "password" and secret.password:
        auth["password"] = secret.password
    return _json(200, {"mode": secret.mode, "auth": auth})


def _json(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status,
        body=encode_json(body),
        content_type="application/json",
        headers={**PAGE_HEADERS, "Cache-Control": "no-store"},
    )


# ----------------------------------------------------------------- method metadata


def example_for(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """A skeleton value for a JSON schema: required fields with placeholder values."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example_for(defs.get(name, {}), defs, depth + 1)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):  # a Literal: its first value (msgspec states no type for it)
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return example_for(options[0], defs, depth + 1) if options else None
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 4:
            return {}
        props = schema.get("properties", {})
        return {
            name: example_for(props[name], defs, depth + 1)
            for name in schema.get("required", [])
            if name in props
        }
    if kind == "array":
        if schema.get("minItems", 0) > 0 and isinstance(schema.get("items"), dict):
            return [example_for(schema["items"], defs, depth + 1)]
        return []
    if kind == "integer":
        return schema.get("minimum", 0)
    if kind == "number":
        return 0
    if kind == "boolean":
        return False
    if kind == "string":
        return "" if "minLength" not in schema else "…"
    return None


def describe_methods(table: MethodTable, advertised: list[str]) -> list[dict[str, Any]]:
    """Each advertised method with its scope, its params' JSON schema and an example."""
    out = []
    for name in advertised:
        spec = table.get(name)
        item: dict[str, Any] = {"name": name}
        if spec is not None:
            item["scope"] = spec.scope
            if spec.params is not None:
                try:
                    (schema,), components = msgspec.json.schema_components([spec.params])
                except (TypeError, ValueError):
                    schema, components = {}, {}
                item["schema"] = {**schema, "$defs": components} if components else schema
                item["example"] = example_for(schema, components)
            else:
                item["example"] = {}
        out.append(item)
    return out


async def methods_json(request: web.Request) -> web.Response:
    """`GET /ui/methods.json`: what the method explorer prefills its editor from."""
    gateway = _gateway(request)
    return _json(200, {"methods": describe_methods(gateway.methods, gateway.methods_advertised)})


async def _close_assets(app: web.Application) -> None:
    await app[ASSETS_KEY].aclose()


async def auth_mode(request: web.Request) -> web.Response:
    """`GET /ui/auth-mode`: what the sign-in screen should ask for (`token`, `password`, or
    `none`, which needs no sign-in and works from this machine only). No secret in it."""
    return _json(200, {"mode": _gateway(request).shared_secret.mode})


def add_webui_routes(app: web.Application) -> None:
    app[ASSETS_KEY] = WebAssets()
    app.on_cleanup.append(_close_assets)
    add_route(app, "GET", "/ui/auth-mode", auth_mode, Access.PUBLIC)
    add_route(app, "GET", "/ui/methods.json", methods_json, Access.PUBLIC)
    add_route(app, "POST", "/ui/ticket", mint_ticket, Access.TOKEN)
    add_route(app, "POST", "/ui/redeem", redeem_ticket, Access.APP, json_body=True)
    add_route(app, "POST", "/api/local/sign-in", local_sign_in, Access.OWNER)
    add_route(app, "GET", "/ui/{path:.+}", static, Access.PUBLIC)
    add_route(app, "GET", "/favicon.ico", favicon, Access.PUBLIC)


async def favicon(request: web.Request) -> web.Response:
    return serve_asset(request, "icon.svg")
