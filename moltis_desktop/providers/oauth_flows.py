"""The two ways to sign in: a browser (Authorization Code + PKCE), or a device code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import logging
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from moltis_desktop.core.clock import Clock
from moltis_desktop.core.logging import REDACTOR
from moltis_desktop.providers.oauth_tokens import (
    DEVICE_GRANT,
    OAuthClient,
    OAuthError,
    TokenSet,
    as_seconds,
    describe,
    error_of,
    exchange_code,
    post,
)

_LOGGER = logging.getLogger(__name__)

Notify = Callable[[str], None]
"""Shows the user a line (the sign-in address, the device code)."""
Browser = Callable[[str], Awaitable[bool]]
"""Opens an address in a browser; False when it could not."""
Sleep = Callable[[float], Awaitable[None]]

BROWSER_TIMEOUT_S = 300.0
DEVICE_TIMEOUT_S = 900.0
_SLOW_DOWN_S = 5.0  # RFC 8628 §3.5: each slow_down adds 5 seconds to the interval
_PAGE_WAIT_S = 60.0


def notify_stderr(line: str) -> None:
    """The default Notify: the terminal."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def system_browser(url: str) -> bool:
    """The default Browser: `webbrowser.open`, in a thread (it may start a process)."""
    import webbrowser

    if (
        sys.platform not in ("win32", "darwin")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        # No graphical session (SSH, a server): webbrowser would fall back to a text browser
        # (lynx, w3m) that takes over the terminal; printing the address is enough.
        return False
    try:
        return await asyncio.to_thread(webbrowser.open, url)
    except (webbrowser.Error, OSError):
        return False


@dataclass(frozen=True)
class Pkce:
    """A PKCE pair (RFC 7636, S256)."""

    verifier: str = field(repr=False)
    challenge: str


def make_pkce() -> Pkce:
    """A fresh verifier (86 URL-safe characters, 512 bits) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    REDACTOR.add(verifier)
    return Pkce(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


def authorize_url(client: OAuthClient, *, redirect_uri: str, pkce: Pkce, state: str) -> str:
    """The address the browser opens to sign in."""
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(client.scopes),
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": state,
        **dict(client.authorize_params),
    }
    return f"{client.url(client.authorize_path)}?{urlencode(params, quote_via=quote)}"


# ---------------------------------------------------------------- browser flow


def _page(status: int, title: str, text: str) -> web.Response:
    body = (
        "<!doctype html><meta charset=utf-8><title>Moltis sign-in</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:32em;margin:4em auto'>"
        f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p></body>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if os.name != "nt":
        # Lets a second sign-in reuse the port while the first one's socket is in TIME_WAIT
        # (on Windows the option would let another process steal a bound port).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


class _LoopbackListener:
    """A one-shot HTTP listener on 127.0.0.1 for the browser's redirect."""

    def __init__(self, path: str, state: str) -> None:
        self._path = path
        self._state = state
        self._code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._outcome: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int) -> None:
        try:
            sock = _bind(port)
        except OSError as exc:
            if port == 0:
                raise OAuthError(f"cannot listen on 127.0.0.1 for the sign-in: {exc}") from None
            _LOGGER.warning("port %d is busy (%s); listening on a free port instead", port, exc)
            sock = _bind(0)
        self.port = int(sock.getsockname()[1])
        app = web.Application()
        app.router.add_get(self._path, self._callback)
        # No access log: the redirect's query string carries the authorization code.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _callback(self, request: web.Request) -> web.Response:
        query = request.query
        if self._code.done():
            return _page(200, "Sign-in already handled", "You can close this tab.")
        if query.get("state") != self._state:
            # A stale tab or another page: refuse it and keep waiting for the real answer.
            _LOGGER.warning("ignored a sign-in redirect whose state does not match")
            return _page(
                400,
                "This sign-in link is out of date",
                "Use the address the terminal printed last, or start the sign-in again.",
            )
        error = query.get("error")
        code = query.get("code")
        if error or not code:
            reason = query.get("error_description") or error or "no authorization code"
            self._code.set_exception(
                OAuthError(
                    f"the sign-in was declined or failed in the browser ({reason}); run the "
                    "command again to retry"
                )
            )
            return _page(400, "Sign-in not completed", f"{reason}. Return to the terminal.")
        REDACTOR.add(code)
        self._code.set_result(code)
        # Answer once the code is exchanged, so the page tells the truth.
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._outcome), _PAGE_WAIT_S)
        except TimeoutError:
            failure = "the terminal did not finish the sign-in"
        if failure:
            return _page(500, "Sign-in failed", f"{failure}. Return to the terminal.")
        return _page(200, "Signed in to Moltis", "You can close this tab.")

    async def code(self, timeout_s: float) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(self._code), timeout_s)
        except TimeoutError:
            raise OAuthError(
                f"no answer from the browser within {timeout_s:.0f} s: run the command again, "
                "or sign in with a code instead (`--device`)"
            ) from None

    def finish(self, failure: str | None) -> None:
        if not self._outcome.done():
            self._outcome.set_result(failure)

    async def close(self) -> None:
        self.finish("the sign-in was abandoned")
        if self._runner is not None:
            await self._runner.cleanup()
        if self._code.done() and not self._code.cancelled():
            self._code.exception()  # retrieved: no "exception was never retrieved" noise
        else:
            self._code.cancel()


async def browser_flow(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    *,
    clock: Clock,
    notify: Notify,
    browser: Browser | None,
    port: int | None = None,
    timeout_s: float = BROWSER_TIMEOUT_S,
) -> TokenSet:
    """Sign in with the Authorization Code flow and PKCE: print (and open) the authorize
    address, catch the redirect on a loopback listener, check `state`, exchange the code.

    `port` overrides the redirect URI's port (0: any free port).
    """
    pkce, state = make_pkce(), secrets.token_urlsafe(32)
    redirect = urlsplit(client.redirect_uri)
    listener = _LoopbackListener(redirect.path or "/", state)
    try:
        wanted = (redirect.port or 0) if port is None else port
        await listener.start(wanted)
        host = redirect.hostname or "localhost"
        redirect_uri = urlunsplit(
            (redirect.scheme, f"{host}:{listener.port}", redirect.path, "", "")
        )
        if wanted and listener.port != wanted:
            notify(
                f"note: port {wanted} is busy (another sign-in running?), so the sign-in "
                f"listens on port {listener.port}; {client.provider} may refuse that address. "
                "If it does, close the other program, or use `--device`."
            )
        url = authorize_url(client, redirect_uri=redirect_uri, pkce=pkce, state=state)
        notify(f"To sign in to {client.provider}, open this address in a browser:\n\n  {url}\n")
        if browser is not None and not await browser(url):
            notify(
                "(no browser opened here: open the address in a browser on this computer, "
                "where the sign-in returns to, or use `--device` to sign in from elsewhere)"
            )
        notify("Waiting for the browser…")
        code = await listener.code(timeout_s)
        try:
            tokens = await exchange_code(
                session,
                client,
                code=code,
                verifier=pkce.verifier,
                redirect_uri=redirect_uri,
                now_ms=clock.now_ms(),
            )
        except OAuthError as exc:
            listener.finish(str(exc))
            raise
        listener.finish(None)
        return tokens
    finally:
        await listener.close()


# ---------------------------------------------------------------- device flow


async def device_flow(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    *,
    clock: Clock,
    sleep: Sleep,
    notify: Notify,
    timeout_s: float = DEVICE_TIMEOUT_S,
) -> TokenSet:
    """Sign in with a code typed on another device: RFC 8628, or OpenAI's variant."""
    if client.device_style == "openai":
        return await _openai_device_flow(
            session, client, clock=clock, sleep=sleep, notify=notify, timeout_s=timeout_s
        )
    return await _rfc8628_device_flow(
        session, client, clock=clock, sleep=sleep, notify=notify, timeout_s=timeout_s
    )


def _show_code(
    notify: Notify, client: OAuthClient, uri: str, user_code: str, complete: str
) -> None:
    notify(
        f"To sign in to {client.provider}, open {uri} on any device and enter the code\n\n"
        f"  {user_code}\n"
    )
    if complete and complete != uri:
        notify(f"(or open {complete}, which fills the code in)")
    notify("Waiting for the sign-in…")


def _expired(client: OAuthClient) -> OAuthError:
    return OAuthError(
        f"the code expired before the sign-in finished: run `moltis auth login "
        f"{client.provider} --device` again and enter the new code sooner"
    )


async def _rfc8628_device_flow(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    *,
    clock: Clock,
    sleep: Sleep,
    notify: Notify,
    timeout_s: float,
) -> TokenSet:
    status, doc = await post(
        session,
        client.url(client.device_authorization_path),
        what="start the device sign-in",
        form={"client_id": client.client_id, "scope": " ".join(client.scopes)},
    )
    device_code = doc.get("device_code")
    user_code = doc.get("user_code")
    # Google calls it verification_url; the RFC, verification_uri.
    uri = doc.get("verification_uri") or doc.get("verification_url")
    if status != 200 or not isinstance(device_code, str) or not user_code or not uri:
        raise OAuthError(
            f"{client.provider} did not start a device sign-in ({describe(status, doc)}); "
            f"sign in with a browser instead (`moltis auth login {client.provider}`)"
        )
    REDACTOR.add(device_code)
    _show_code(
        notify, client, str(uri), str(user_code), str(doc.get("verification_uri_complete") or "")
    )
    interval = as_seconds(doc.get("interval"), 5.0)
    deadline = clock.monotonic() + min(as_seconds(doc.get("expires_in"), timeout_s), timeout_s)
    form = {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client.client_id}
    while True:
        await sleep(interval)
        if clock.monotonic() > deadline:
            raise _expired(client)
        status, doc = await post(
            session, client.url(client.token_path), what="finish the device sign-in", form=form
        )
        if status == 200:
            return TokenSet.from_response(doc, client, clock.now_ms())
        code, _ = error_of(status, doc)
        if code == "authorization_pending":
            continue
        if code == "slow_down":
            interval += _SLOW_DOWN_S
            _LOGGER.debug("device sign-in: asked to slow down; polling every %.0f s", interval)
            continue
        if code == "access_denied":
            raise OAuthError(
                "the sign-in was declined on the other device; run the command again to retry"
            )
        if code == "expired_token":
            raise _expired(client)
        raise OAuthError(
            f"the device sign-in failed ({describe(status, doc)}); run the command again"
        )


async def _openai_device_flow(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    *,
    clock: Clock,
    sleep: Sleep,
    notify: Notify,
    timeout_s: float,
) -> TokenSet:
    # OpenAI's variant (what `codex login --device-auth` does): JSON requests; polling
    # answers 403/404 while pending and finally an authorization code with its PKCE
    # verifier, which is exchanged at the token endpoint like the browser flow's.
    status, doc = await post(
        session,
        client.url(client.device_authorization_path),
        what="start the device sign-in",
        json_body={"client_id": client.client_id},
    )
    if status == 404:
        raise OAuthError(
            "device-code sign-in is not enabled for this account: turn it on in ChatGPT's "
            f"security settings, or sign in with a browser (`moltis auth login {client.provider}`)"
        )
    auth_id = doc.get("device_auth_id")
    user_code = doc.get("user_code") or doc.get("usercode")
    if status != 200 or not isinstance(auth_id, str) or not isinstance(user_code, str):
        raise OAuthError(
            f"{client.provider} did not start a device sign-in ({describe(status, doc)}); "
            f"sign in with a browser instead (`moltis auth login {client.provider}`)"
        )
    REDACTOR.add(auth_id)
    _show_code(notify, client, client.url(client.device_verification_path), user_code, "")
    interval = as_seconds(doc.get("interval"), 5.0)
    deadline = clock.monotonic() + min(as_seconds(doc.get("expires_in"), timeout_s), timeout_s)
    body = {"device_auth_id": auth_id, "user_code": user_code}
    while True:
        await sleep(interval)
        if clock.monotonic() > deadline:
            raise _expired(client)
        status, doc = await post(
            session,
            client.url(client.device_poll_path),
            what="finish the device sign-in",
            json_body=body,
        )
        if status in (403, 404):
            continue
        if status == 429:
            interval += _SLOW_DOWN_S
            continue
        code, verifier = doc.get("authorization_code"), doc.get("code_verifier")
        if status != 200 or not isinstance(code, str) or not isinstance(verifier, str):
            raise OAuthError(
                f"the device sign-in failed ({describe(status, doc)}); run the command again"
            )
        REDACTOR.add(code)
        REDACTOR.add(verifier)
        return await exchange_code(
            session,
            client,
            code=code,
            verifier=verifier,
            redirect_uri=client.url(client.device_redirect_path),
            now_ms=clock.now_ms(),
        )


__all__ = [
    "BROWSER_TIMEOUT_S",
    "DEVICE_TIMEOUT_S",
    "Browser",
    "Notify",
    "Pkce",
    "Sleep",
    "authorize_url",
    "browser_flow",
    "device_flow",
    "make_pkce",
    "notify_stderr",
    "system_browser",
]
