"""OAuth clients of the providers, the token bundle, and the token endpoint's grants."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aiohttp

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import REDACTOR

_LOGGER = logging.getLogger(__name__)

ISSUER_ENV = "MOLTIS_OAUTH_ISSUER"
HTTP_TIMEOUT_S = 30.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Error codes after which a refresh token is dead for good (RFC 6749's `invalid_grant`,
# plus the codes OpenAI's issuer uses for rotated or revoked refresh tokens).
_DEAD_REFRESH_CODES = frozenset(
    {
        "invalid_grant",
        "invalid_token",
        "refresh_token_expired",
        "refresh_token_reused",
        "refresh_token_invalidated",
    }
)

DeviceStyle = Literal["rfc8628", "openai"]


class OAuthError(MoltisError):
    """Signing in, refreshing or signing out failed; the message says what to do."""


class SignInExpiredError(OAuthError):
    """The stored sign-in can no longer be refreshed: the user has to sign in again."""


@dataclass(frozen=True)
class OAuthClient:
    """A provider's OAuth client: who we are to its issuer, and where its endpoints are.

    Paths are joined to `issuer` unless they are absolute URLs, so pointing `issuer`
    elsewhere (the `issuer` argument, MOLTIS_OAUTH_ISSUER) moves every endpoint at once.
    """

    provider: str
    """Provider id the tokens are for, e.g. `openai-codex`."""
    client_id: str
    issuer: str
    scopes: tuple[str, ...]
    authorize_path: str = "/oauth/authorize"
    token_path: str = "/oauth/token"
    revocation_path: str = ""
    """RFC 7009 revocation endpoint; empty when the issuer has none."""
    redirect_uri: str = "http://localhost:1455/auth/callback"
    """Loopback redirect of the browser flow; its port is tried first, then a free one."""
    authorize_params: tuple[tuple[str, str], ...] = ()
    """Extra query parameters of the authorize request."""
    device_style: DeviceStyle = "rfc8628"
    """`rfc8628`: the standard device grant; `openai`: OpenAI's own variant (a user code
    that yields an authorization code, exchanged like the browser flow's)."""
    device_authorization_path: str = "/oauth/device/code"
    device_poll_path: str = ""
    """`openai` style: the endpoint polled for the authorization code."""
    device_verification_path: str = ""
    """`openai` style: the page where the user types the code."""
    device_redirect_path: str = ""
    """`openai` style: the redirect URI the device's authorization code was issued for."""
    account_claim: str = ""
    """A namespaced id_token claim holding account details (OpenAI's `…/auth`)."""
    account_fields: tuple[tuple[str, str], ...] = ()
    """(field in `account_claim`, key in the stored account) pairs."""

    def url(self, path: str) -> str:
        """The absolute URL of an endpoint path."""
        if path.startswith(("http://", "https://")):
            return path
        return self.issuer.rstrip("/") + path


OPENAI_CODEX = OAuthClient(
    provider="openai-codex",
    # The Codex CLI's public client: ChatGPT sign-in only accepts registered clients.
    client_id="app_EMoamEEZ73f0CkXaXp7hrann",
    issuer="https://auth.openai.com",
    scopes=("openid", "profile", "email", "offline_access"),
    authorize_params=(
        ("id_token_add_organizations", "true"),
        ("codex_cli_simplified_flow", "true"),
    ),
    device_style="openai",
    device_authorization_path="/api/accounts/deviceauth/usercode",
    device_poll_path="/api/accounts/deviceauth/token",
    device_verification_path="/codex/device",
    device_redirect_path="/deviceauth/callback",
    account_claim="https://api.openai.com/auth",
    account_fields=(("chatgpt_account_id", "account_id"), ("chatgpt_plan_type", "plan")),
)

OAUTH_CLIENTS: Mapping[str, OAuthClient] = {c.provider: c for c in (OPENAI_CODEX,)}
"""The providers that offer OAuth sign-in, by provider id."""


def oauth_client(
    provider: str,
    *,
    issuer: str | None = None,
    env: Mapping[str, str] | None = None,
    clients: Mapping[str, OAuthClient] | None = None,
) -> OAuthClient:
    """The OAuth client of `provider`, its issuer replaced by `issuer` or MOLTIS_OAUTH_ISSUER."""
    known = OAUTH_CLIENTS if clients is None else clients
    client = known.get(provider)
    if client is None:
        names = ", ".join(sorted(known)) or "none"
        raise OAuthError(
            f"{provider!r} has no OAuth sign-in (providers with one: {names}); to store an "
            f"API key instead, run `moltis auth login {provider} --api-key`"
        )
    override = issuer or (os.environ if env is None else env).get(ISSUER_ENV)
    return replace(client, issuer=override.rstrip("/")) if override else client


# ---------------------------------------------------------------- the token bundle


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, *without* checking its signature (only for display and expiry:
    the issuer checks its own tokens). Empty when `token` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except ValueError:  # binascii.Error and JSONDecodeError are both ValueErrors
        return {}
    return claims if isinstance(claims, dict) else {}


def account_from_id_token(id_token: str, client: OAuthClient) -> dict[str, str]:
    """Who signed in: email, name, subject, and the provider's account fields."""
    claims = jwt_claims(id_token)
    account = {k: v for k in ("email", "name", "sub") if isinstance(v := claims.get(k), str) and v}
    details = claims.get(client.account_claim) if client.account_claim else None
    if isinstance(details, dict):
        for source, key in client.account_fields:
            value = details.get(source)
            if isinstance(value, str) and value:
                account[key] = value
    return account


def as_seconds(value: Any, default: float) -> float:
    """A duration from an answer, in seconds; `default` when absent or not a number."""
    # Issuers send numbers, and some (OpenAI's device endpoint) numeric strings.
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class TokenSet:
    """What an OAuth sign-in yields; kept as JSON in the secret store, never logged."""

    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    id_token: str = field(default="", repr=False)
    expires_at: int | None = None
    """When the access token expires, in ms since the epoch; None when unknown."""
    scope: str = ""
    token_type: str = "Bearer"
    account: Mapping[str, str] = field(default_factory=dict)
    """Who signed in (from the id_token's claims): email, name, sub, account_id, …"""
    provider: str = ""

    def __post_init__(self) -> None:
        # Every token this process holds is blanked from the logs, wherever it came from.
        for token in (self.access_token, self.refresh_token, self.id_token):
            REDACTOR.add(token)

    def expires_within(self, seconds: float, now_ms: int) -> bool:
        """True when the access token expires less than `seconds` from `now_ms`."""
        return self.expires_at is not None and self.expires_at - now_ms < seconds * 1000

    def to_json(self) -> str:
        """The bundle as stored in the secret store."""
        return json.dumps(
            {
                "version": 1,
                "kind": "oauth",
                "provider": self.provider,
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "id_token": self.id_token,
                "expires_at": self.expires_at,
                "scope": self.scope,
                "token_type": self.token_type,
                "account": dict(self.account),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TokenSet:
        """A bundle read back from the secret store; ValueError when it is not one."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise ValueError("not an OAuth token bundle")
        expires = doc.get("expires_at")
        account = doc.get("account")
        return cls(
            access_token=doc["access_token"],
            refresh_token=str(doc.get("refresh_token") or ""),
            id_token=str(doc.get("id_token") or ""),
            expires_at=int(expires) if isinstance(expires, int | float) else None,
            scope=str(doc.get("scope") or ""),
            token_type=str(doc.get("token_type") or "Bearer"),
            account={str(k): str(v) for k, v in account.items()}
            if isinstance(account, dict)
            else {},
            provider=str(doc.get("provider") or ""),
        )

    @classmethod
    def from_response(
        cls,
        doc: Mapping[str, Any],
        client: OAuthClient,
        now_ms: int,
        previous: TokenSet | None = None,
    ) -> TokenSet:
        """The bundle from a token endpoint answer; what a refresh answer leaves out (the
        refresh token when not rotated, the id_token) is kept from `previous`."""
        access = doc.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError(
                f"{client.provider}'s token endpoint answered without an access token; "
                "try again later"
            )
        id_token = str(doc.get("id_token") or (previous.id_token if previous else ""))
        if "expires_in" in doc:
            expires_at: int | None = now_ms + int(as_seconds(doc["expires_in"], 0) * 1000)
        else:
            # No lifetime given: a JWT access token still says when it expires.
            exp = jwt_claims(access).get("exp")
            expires_at = int(exp * 1000) if isinstance(exp, int | float) else None
        return cls(
            access_token=access,
            refresh_token=str(
                doc.get("refresh_token") or (previous.refresh_token if previous else "")
            ),
            id_token=id_token,
            expires_at=expires_at,
            scope=str(
                doc.get("scope") or (previous.scope if previous else " ".join(client.scopes))
            ),
            token_type=str(doc.get("token_type") or "Bearer"),
            account=account_from_id_token(id_token, client) if id_token else {},
            provider=client.provider,
        )


# ---------------------------------------------------------------- the endpoints


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    what: str,
    form: Mapping[str, str] | None = None,
    json_body: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a form (or JSON) and return the status and the JSON answer ({} when not JSON).

    Network failures become an OAuthError naming `what` was being done.
    """
    try:
        async with session.post(
            url,
            data=dict(form) if form is not None else None,
            json=dict(json_body) if json_body is not None else None,
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
        ) as resp:
            status, text = resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise OAuthError(
            f"cannot reach {url} to {what} ({reason}); check the network and try again"
        ) from None
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        doc = {}
    return status, doc if isinstance(doc, dict) else {}


def error_of(status: int, doc: Mapping[str, Any]) -> tuple[str, str]:
    """The (code, description) of an error answer: RFC 6749's `error` / `error_description`,
    or OpenAI's `{"error": {"code", "message"}}`."""
    error = doc.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or f"http_{status}"
        return str(code), str(error.get("message") or "")
    return str(error or f"http_{status}"), str(doc.get("error_description") or "")


def describe(status: int, doc: Mapping[str, Any]) -> str:
    """An error answer for a message: `invalid_grant: code expired (HTTP 400)`."""
    code, description = error_of(status, doc)
    return f"{code}{': ' + description if description else ''} (HTTP {status})"


async def exchange_code(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    now_ms: int,
) -> TokenSet:
    """Trade an authorization code (and its PKCE verifier) for tokens."""
    status, doc = await post(
        session,
        client.url(client.token_path),
        what="finish signing in",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client.client_id,
            "code_verifier": verifier,
        },
    )
    if status != 200:
        raise OAuthError(
            f"{client.provider} did not accept the sign-in ({describe(status, doc)}); "
            f"run `moltis auth login {client.provider}` again"
        )
    return TokenSet.from_response(doc, client, now_ms)


async def refresh_tokens(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    tokens: TokenSet,
    *,
    profile: str,
    now_ms: int,
) -> TokenSet:
    """New tokens for `tokens` (grant_type=refresh_token).

    Raises SignInExpiredError when the refresh token is dead (the user must sign in again),
    OAuthError for anything that may pass (network, server errors).
    """
    expired = SignInExpiredError(
        f"the sign-in for {profile} has expired: run `moltis auth login {client.provider}`"
        + (f" --profile {profile}" if profile != client.provider else "")
    )
    if not tokens.refresh_token:
        raise expired
    status, doc = await post(
        session,
        client.url(client.token_path),
        what=f"refresh the sign-in for {profile}",
        form={
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": client.client_id,
        },
    )
    if status == 200:
        return TokenSet.from_response(doc, client, now_ms, previous=tokens)
    code, _ = error_of(status, doc)
    if code in _DEAD_REFRESH_CODES or status == 401:
        _LOGGER.warning("the sign-in for %s can no longer be refreshed (%s)", profile, code)
        raise expired
    raise OAuthError(
        f"refreshing the sign-in for {profile} failed ({describe(status, doc)}); try again later"
    )


async def revoke(session: aiohttp.ClientSession, client: OAuthClient, tokens: TokenSet) -> bool:
    """Ask the issuer to revoke the tokens (RFC 7009); False when it has no endpoint or
    refused. Failures are not errors: the tokens are deleted locally anyway."""
    if not client.revocation_path:
        return False
    token, hint = (
        (tokens.refresh_token, "refresh_token")
        if tokens.refresh_token
        else (tokens.access_token, "access_token")
    )
    try:
        status, doc = await post(
            session,
            client.url(client.revocation_path),
            what="revoke the sign-in",
            form={"token": token, "token_type_hint": hint, "client_id": client.client_id},
        )
    except OAuthError as exc:
        _LOGGER.info("could not revoke the %s sign-in: %s", client.provider, exc)
        return False
    if status != 200:
        _LOGGER.info("%s did not revoke the sign-in: %s", client.provider, describe(status, doc))
        return False
    return True
