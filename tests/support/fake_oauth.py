"""A fake OAuth authorization server (the external service at the sign-in seam)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from moltis_desktop.providers.oauth_tokens import DEVICE_GRANT, OPENAI_CODEX

DeviceMode = Literal["approve", "deny", "expire", "slow_down", "pending"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_id_token(claims: dict[str, Any]) -> str:
    """An unsigned-looking JWT (the client never checks the signature)."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'not-a-signature')}"


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]


@dataclass
class _Device:
    polls: int = 0
    user_code: str = ""


@dataclass
class FakeOAuthServer:
    """Authorize (auto-approves), token (authorization_code with PKCE, refresh_token,
    device_code), RFC 8628 device authorization, OpenAI's device variant, revocation.

    Knobs: `device_mode` and `pending_polls` shape the device flow; `authorize_error`
    makes the authorize step redirect with an error; `token_delay_s` slows the token
    endpoint (to make concurrent refreshes overlap); `revoke_status` fails revocation.
    """

    client_ids: frozenset[str] = frozenset({OPENAI_CODEX.client_id, "moltis-test"})
    expires_in: int = 3600
    device_mode: DeviceMode = "approve"
    pending_polls: int = 2
    interval: int = 5
    authorize_error: str = ""
    token_delay_s: float = 0.0
    revoke_status: int = 200
    email: str = "ada@example.com"
    account_id: str = "acct-1234"
    requests: list[Recorded] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    """Every secret value handed out (codes, tokens), to check none reaches a log."""
    revoked: list[str] = field(default_factory=list)
    _codes: dict[str, dict[str, str]] = field(default_factory=dict)
    _refresh: set[str] = field(default_factory=set)
    _devices: dict[str, _Device] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeOAuthServer:
        app = web.Application()
        app.router.add_get("/oauth/authorize", self._authorize)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_post("/oauth/device/code", self._device_code)
        app.router.add_post("/api/accounts/deviceauth/usercode", self._openai_usercode)
        app.router.add_post("/api/accounts/deviceauth/token", self._openai_poll)
        app.router.add_post("/oauth/revoke", self._revoke)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeOAuthServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ helpers

    def _secret(self, prefix: str) -> str:
        value = f"{prefix}-{next(self._counter)}-{secrets.token_urlsafe(16)}"
        self.issued.append(value)
        return value

    async def _record(self, request: web.Request) -> dict[str, str]:
        form: dict[str, str] = {}
        if request.method == "POST":
            if request.content_type == "application/json":
                form = {k: str(v) for k, v in (await request.json()).items()}
            else:
                form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(Recorded(request.method, request.path, dict(request.query), form))
        return form

    def calls(self, path: str, grant_type: str | None = None) -> list[Recorded]:
        """Requests to `path` (with that grant_type, for the token endpoint)."""
        return [
            r
            for r in self.requests
            if r.path == path and (grant_type is None or r.form.get("grant_type") == grant_type)
        ]

    def invalidate_refresh_tokens(self) -> None:
        """As when the user signs out everywhere: every refresh token stops working."""
        self._refresh.clear()

    def _tokens(self) -> web.Response:
        refresh = self._secret("rt")
        self._refresh.add(refresh)
        id_token = make_id_token(
            {
                "email": self.email,
                "sub": "user-1",
                "https://api.openai.com/auth": {
                    "chatgpt_account_id": self.account_id,
                    "chatgpt_plan_type": "plus",
                },
            }
        )
        self.issued.append(id_token)
        return web.json_response(
            {
                "access_token": self._secret("at"),
                "refresh_token": refresh,
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "scope": "openid profile email offline_access",
            }
        )

    @staticmethod
    def _error(code: str, status: int = 400, description: str = "") -> web.Response:
        doc = {"error": code, **({"error_description": description} if description else {})}
        return web.json_response(doc, status=status)

    # ------------------------------------------------------------------ endpoints

    async def _authorize(self, request: web.Request) -> web.Response:
        await self._record(request)
        q = request.query
        redirect = q.get("redirect_uri", "")
        host = urlsplit(redirect).hostname
        if q.get("client_id") not in self.client_ids or host not in ("localhost", "127.0.0.1"):
            return web.Response(status=400, text="unknown client or redirect_uri")
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return web.Response(status=400, text="PKCE S256 required")
        if self.authorize_error:
            params = {"error": self.authorize_error, "state": q.get("state", "")}
        else:
            code = self._secret("code")
            self._codes[code] = {"challenge": q["code_challenge"], "redirect_uri": redirect}
            params = {"code": code, "state": q.get("state", "")}
        raise web.HTTPFound(f"{redirect}?{urlencode(params)}")

    async def _token(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)
        if form.get("client_id") not in self.client_ids:
            return self._error("invalid_client", 401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            entry = self._codes.pop(form.get("code", ""), None)  # one use only
            if entry is None or entry["redirect_uri"] != form.get("redirect_uri"):
                return self._error("invalid_grant", description="unknown code or redirect_uri")
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if _b64(digest) != entry["challenge"]:
                return self._error("invalid_grant", description="PKCE verification failed")
            return self._tokens()
        if grant == "refresh_token":
            token = form.get("refresh_token", "")
            if token not in self._refresh:
                return self._error("invalid_grant", description="refresh token is not valid")
            self._refresh.discard(token)  # rotated, as OpenAI does
            return self._tokens()
        if grant == DEVICE_GRANT:
            device = self._devices.get(form.get("device_code", ""))
            if device is None:
                return self._error("invalid_grant")
            device.polls += 1
            return self._device_answer(device)
        return self._error("unsupported_grant_type")

    def _device_answer(self, device: _Device) -> web.Response:
        mode, waiting = self.device_mode, device.polls <= self.pending_polls
        if mode == "slow_down" and device.polls == 1:
            return self._error("slow_down")
        if waiting or mode == "pending":
            return self._error("authorization_pending")
        if mode == "deny":
            return self._error("access_denied")
        if mode == "expire":
            return self._error("expired_token")
        return self._tokens()

    async def _device_code(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        if form.get("client_id") not in self.client_ids:
            return self._error("invalid_client", 401)
        device_code = self._secret("dc")
        self._devices[device_code] = _Device(user_code="WDJB-MJHT")
        return web.json_response(
            {
                "device_code": device_code,
                "user_code": "WDJB-MJHT",
                "verification_uri": f"{self.issuer}/device",
                "verification_uri_complete": f"{self.issuer}/device?user_code=WDJB-MJHT",
                "expires_in": 600,
                "interval": self.interval,
            }
        )

    async def _openai_usercode(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if body.get("client_id") not in self.client_ids:
            return web.json_response({"error": {"code": "invalid_client"}}, status=401)
        auth_id = self._secret("deviceauth")
        self._devices[auth_id] = _Device(user_code="ABCD-1234")
        # OpenAI sends the interval as a string.
        return web.json_response(
            {"device_auth_id": auth_id, "user_code": "ABCD-1234", "interval": str(self.interval)}
        )

    async def _openai_poll(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        device = self._devices.get(body.get("device_auth_id", ""))
        if device is None or device.user_code != body.get("user_code"):
            return web.json_response({"error": {"code": "invalid_request"}}, status=400)
        device.polls += 1
        if device.polls <= self.pending_polls or self.device_mode == "pending":
            return web.json_response({"error": {"code": "deviceauth_pending"}}, status=403)
        if self.device_mode == "deny":
            return web.json_response({"error": {"code": "access_denied"}}, status=400)
        verifier = secrets.token_urlsafe(48)
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        code = self._secret("code")
        self.issued.append(verifier)
        self._codes[code] = {
            "challenge": challenge,
            "redirect_uri": f"{self.issuer}/deviceauth/callback",
        }
        return web.json_response(
            {"authorization_code": code, "code_challenge": challenge, "code_verifier": verifier}
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        form = await self._record(request)
        if self.revoke_status != 200:
            return web.Response(status=self.revoke_status, text="revocation is broken today")
        token = form.get("token", "")
        self.revoked.append(token)
        self._refresh.discard(token)
        return web.Response(status=200)


async def browse(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """Be the user's browser: open `url`, follow redirects (sending `localhost` to
    127.0.0.1, so the test only talks to 127.0.0.1), and return the final page."""
    for _ in range(5):
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status in (301, 302, 303, 307, 308):
                parts = urlsplit(resp.headers["Location"])
                netloc = parts.netloc.replace("localhost", "127.0.0.1")
                url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
                continue
            return resp.status, await resp.text()
    raise AssertionError("too many redirects")
