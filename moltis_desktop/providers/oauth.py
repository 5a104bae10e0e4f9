"""Sign-in for providers: auth profiles, their stored credentials, and fresh access tokens."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import AuthProfileSettings
from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.providers.oauth_flows import (
    BROWSER_TIMEOUT_S,
    DEVICE_TIMEOUT_S,
    Browser,
    Notify,
    Sleep,
    browser_flow,
    device_flow,
    notify_stderr,
    system_browser,
)
from moltis_desktop.providers.oauth_tokens import (
    ISSUER_ENV,
    OAUTH_CLIENTS,
    OPENAI_CODEX,
    OAuthClient,
    OAuthError,
    SignInExpiredError,
    TokenSet,
    oauth_client,
    refresh_tokens,
    revoke,
)

_LOGGER = logging.getLogger(__name__)

REFRESH_MARGIN_S = 60.0
"""An access token this close to expiry is refreshed before it is handed out."""
PROFILES_FILE_NAME = "auth-profiles.json"
"""Profiles created by `moltis auth login` that the config does not name (no secrets)."""

LoginMethod = Literal["pkce", "device", "api_key"]
ProfileKind = Literal["api_key", "oauth"]


def secret_name(profile: str, settings: AuthProfileSettings) -> str:
    """The secret-store entry of a profile: its `secret`, or `auth-<profile>`."""
    return settings.secret or f"auth-{profile}"


@dataclass(frozen=True)
class ProfileStatus:
    """What `status` says about one profile (no secrets)."""

    profile: str
    provider: str
    kind: ProfileKind
    secret: str
    """Name of the secret-store entry."""
    stored: bool
    """Credentials are in the secret store."""
    valid: bool
    """Usable: a key is stored, or an access token is unexpired or can be refreshed."""
    expires_at: int | None = None
    """When the access token expires, in ms since the epoch (OAuth)."""
    account: Mapping[str, str] = field(default_factory=dict)
    """Who signed in (OAuth): email, name, account_id, plan…"""
    configured: bool = False
    """Named in the config's `auth_profiles` (else created by `moltis auth login`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "provider": self.provider,
            "kind": self.kind,
            "secret": self.secret,
            "stored": self.stored,
            "valid": self.valid,
            "expires_at": self.expires_at,
            "account": dict(self.account),
            "configured": self.configured,
        }


class AuthManager:
    """Signs in to providers and hands out valid credentials for auth profiles.

    Profiles come from the config (`auth_profiles`) and from earlier logins (kept, without
    secrets, in `auth-profiles.json` in `state_dir`). OAuth tokens are refreshed shortly
    before they expire; concurrent callers share one refresh.
    """

    def __init__(
        self,
        store: SecretStore,
        profiles: Mapping[str, AuthProfileSettings] | None = None,
        *,
        state_dir: Path | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
        notify: Notify = notify_stderr,
        browser: Browser = system_browser,
        issuer: str | None = None,
        env: Mapping[str, str] | None = None,
        clients: Mapping[str, OAuthClient] | None = None,
        redirect_port: int | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._store = store
        self._configured = dict(profiles or {})
        self._index_path = state_dir / PROFILES_FILE_NAME if state_dir is not None else None
        self._clock = clock
        self._sleep = sleep
        self._notify = notify
        self._browser = browser
        self._issuer = issuer
        self._env = env
        self._clients = clients
        self._redirect_port = redirect_port
        self._session = session
        self._tokens: dict[str, TokenSet] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ profiles

    def update_profiles(self, profiles: Mapping[str, AuthProfileSettings]) -> None:
        """Take the config's profiles after a reload."""
        self._configured = dict(profiles)
        self._tokens.clear()

    def _created(self) -> dict[str, AuthProfileSettings]:
        if self._index_path is None:
            return {}
        try:
            doc = json.loads(self._index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _LOGGER.warning("ignoring %s: %s", self._index_path, exc)
            return {}
        out: dict[str, AuthProfileSettings] = {}
        for name, entry in (doc.get("profiles") or {}).items():
            kind = entry.get("kind")
            if isinstance(entry.get("provider"), str) and kind in ("api_key", "oauth"):
                out[name] = AuthProfileSettings(
                    provider=entry["provider"], kind=kind, secret=str(entry.get("secret") or "")
                )
        return out

    def _write_created(self, profiles: Mapping[str, AuthProfileSettings]) -> None:
        if self._index_path is None:
            return
        doc = {
            "version": 1,
            "profiles": {
                name: {"provider": p.provider, "kind": p.kind, "secret": p.secret}
                for name, p in sorted(profiles.items())
            },
        }
        atomic_write_text(self._index_path, json.dumps(doc, indent=2) + "\n", mode=0o600)

    def profiles(self) -> dict[str, AuthProfileSettings]:
        """Every known profile: the config's, and those created by logins (config wins)."""
        return {**self._created(), **self._configured}

    def profile(self, name: str) -> AuthProfileSettings:
        """The profile called `name`."""
        found = self.profiles().get(name)
        if found is None:
            raise OAuthError(
                f"no auth profile named {name!r}: see `moltis auth status`, or sign in with "
                "`moltis auth login <provider>`"
            )
        return found

    def _pick_profile(
        self, provider: str, name: str | None, kind: ProfileKind
    ) -> tuple[str, AuthProfileSettings]:
        profiles = self.profiles()
        if name:
            existing = profiles.get(name)
            if existing is not None and (existing.provider, existing.kind) != (provider, kind):
                raise OAuthError(
                    f"auth profile {name!r} is for {existing.provider} ({existing.kind}); "
                    "choose another name with --profile"
                )
            return name, existing or AuthProfileSettings(provider=provider, kind=kind)
        matches = sorted(n for n, p in profiles.items() if (p.provider, p.kind) == (provider, kind))
        if len(matches) > 1:
            raise OAuthError(
                f"several auth profiles are for {provider} ({', '.join(matches)}); pick one "
                "with --profile"
            )
        if matches:
            return matches[0], profiles[matches[0]]
        if provider in profiles:
            taken = profiles[provider]
            raise OAuthError(
                f"the profile name {provider!r} is taken by a {taken.kind} profile for "
                f"{taken.provider}; choose a name with --profile"
            )
        return provider, AuthProfileSettings(provider=provider, kind=kind)

    def _remember(self, name: str, settings: AuthProfileSettings) -> None:
        if name in self._configured:
            return
        created = self._created()
        if created.get(name) != settings:
            created[name] = settings
            self._write_created(created)

    def _forget(self, name: str) -> None:
        created = self._created()
        if created.pop(name, None) is not None:
            self._write_created(created)

    def _client(self, provider: str) -> OAuthClient:
        return oauth_client(provider, issuer=self._issuer, env=self._env, clients=self._clients)

    @asynccontextmanager
    async def _http(self) -> AsyncIterator[aiohttp.ClientSession]:
        # A session per sign-in or refresh: both are rare, and nothing needs closing later.
        if self._session is not None:
            yield self._session
            return
        async with aiohttp.ClientSession() as session:
            yield session

    # ------------------------------------------------------------------ stored tokens

    def _load(self, name: str, settings: AuthProfileSettings) -> TokenSet | None:
        text = self._store.get(secret_name(name, settings))
        if text is None:
            return None
        try:
            return TokenSet.from_json(text)
        except ValueError:
            raise OAuthError(
                f"the stored sign-in for {name} is damaged: run `moltis auth login "
                f"{settings.provider}`"
                + (f" --profile {name}" if name != settings.provider else "")
            ) from None

    def _save(self, name: str, settings: AuthProfileSettings, tokens: TokenSet) -> None:
        self._store.set(secret_name(name, settings), tokens.to_json())
        self._tokens[name] = tokens

    def _fresh(self, tokens: TokenSet) -> bool:
        return not tokens.expires_within(REFRESH_MARGIN_S, self._clock.now_ms())

    def tokens(self, profile: str) -> TokenSet | None:
        """The stored tokens of an OAuth profile as they are (no refresh); None when signed out."""
        settings = self.profile(profile)
        if settings.kind != "oauth":
            raise OAuthError(f"auth profile {profile!r} holds an API key, not OAuth tokens")
        return self._tokens.get(profile) or self._load(profile, settings)

    async def access_token(self, profile: str) -> str:
        """A valid credential for `profile`: the API key, or an OAuth access token refreshed
        when it expires within a minute (one refresh however many callers wait for it)."""
        settings = self.profile(profile)
        if settings.kind == "api_key":
            key = self._store.get(secret_name(profile, settings))
            if not key:
                raise OAuthError(
                    f"no API key is stored for auth profile {profile!r}: run `moltis auth login "
                    f"{settings.provider} --profile {profile} --api-key`"
                )
            return key
        cached = self._tokens.get(profile)
        if cached is not None and self._fresh(cached):
            return cached.access_token
        lock = self._locks.setdefault(profile, asyncio.Lock())
        async with lock:
            # Read the store again: a caller before us (or another process) may have
            # refreshed, and refresh tokens are single-use at some issuers.
            tokens = self._load(profile, settings)
            if tokens is None:
                self._tokens.pop(profile, None)
                raise OAuthError(
                    f"{profile} is not signed in: run `moltis auth login {settings.provider}`"
                    + (f" --profile {profile}" if profile != settings.provider else "")
                )
            if not self._fresh(tokens):
                tokens = await self._refresh(profile, settings, tokens)
            self._tokens[profile] = tokens
            return tokens.access_token

    async def _refresh(
        self, name: str, settings: AuthProfileSettings, tokens: TokenSet
    ) -> TokenSet:
        client = self._client(settings.provider)
        _LOGGER.info("refreshing the sign-in for %s", name)
        try:
            async with self._http() as session:
                fresh = await refresh_tokens(
                    session, client, tokens, profile=name, now_ms=self._clock.now_ms()
                )
        except SignInExpiredError:
            if tokens.refresh_token:
                # Keep the account for `status`, but drop the dead refresh token so the
                # profile shows as needing a new sign-in.
                dead = replace(tokens, refresh_token="", id_token="")
                self._save(name, settings, dead)
            raise
        self._save(name, settings, fresh)
        return fresh

    # ------------------------------------------------------------------ login / logout

    async def login(
        self,
        provider: str,
        profile: str | None = None,
        method: LoginMethod = "pkce",
        *,
        open_browser: bool = True,
        api_key: str | None = None,
        timeout_s: float | None = None,
    ) -> ProfileStatus:
        """Sign in to `provider` (browser or device code) or store its API key, under
        `profile` (default: the provider's one profile of that kind, else the provider id)."""
        if method == "api_key":
            if not api_key or not api_key.strip():
                raise OAuthError("the API key is empty: paste the key when asked, or pipe it in")
            name, settings = self._pick_profile(provider, profile, "api_key")
            self._store.set(secret_name(name, settings), api_key.strip())
            self._remember(name, settings)
            _LOGGER.info("stored an API key for auth profile %s (%s)", name, provider)
            return self._status_of(name, settings)
        client = self._client(provider)
        name, settings = self._pick_profile(provider, profile, "oauth")
        async with self._http() as session:
            if method == "device":
                tokens = await device_flow(
                    session,
                    client,
                    clock=self._clock,
                    sleep=self._sleep,
                    notify=self._notify,
                    timeout_s=timeout_s or DEVICE_TIMEOUT_S,
                )
            else:
                tokens = await browser_flow(
                    session,
                    client,
                    clock=self._clock,
                    notify=self._notify,
                    browser=self._browser if open_browser else None,
                    port=self._redirect_port,
                    timeout_s=timeout_s or BROWSER_TIMEOUT_S,
                )
        self._save(name, settings, tokens)
        self._remember(name, settings)
        _LOGGER.info(
            "signed in to %s as auth profile %s (%s)",
            provider,
            name,
            tokens.account.get("email", "account unknown"),
        )
        return self._status_of(name, settings)

    async def logout(self, profile: str) -> bool:
        """Delete the profile's credentials (revoking OAuth tokens where the issuer allows;
        a failed revocation does not stop the deletion). False when none were stored."""
        settings = self.profile(profile)
        secret = secret_name(profile, settings)
        if settings.kind == "oauth":
            try:
                tokens = self._load(profile, settings)
            except OAuthError:
                tokens = None  # damaged: nothing to revoke, delete it all the same
            if tokens is not None and settings.provider in (self._clients or OAUTH_CLIENTS):
                async with self._http() as session:
                    await revoke(session, self._client(settings.provider), tokens)
        self._tokens.pop(profile, None)
        removed = self._store.delete(secret)
        self._forget(profile)
        _LOGGER.info("signed out of auth profile %s", profile)
        return removed

    # ------------------------------------------------------------------ status

    def _status_of(self, name: str, settings: AuthProfileSettings) -> ProfileStatus:
        secret = secret_name(name, settings)
        configured = name in self._configured
        if settings.kind == "api_key":
            stored = bool(self._store.get(secret))
            return ProfileStatus(
                name, settings.provider, "api_key", secret, stored, stored, configured=configured
            )
        try:
            tokens = self._load(name, settings)
        except OAuthError:
            return ProfileStatus(
                name, settings.provider, "oauth", secret, True, False, None, {}, configured
            )
        if tokens is None:
            return ProfileStatus(
                name, settings.provider, "oauth", secret, False, False, configured=configured
            )
        valid = bool(tokens.refresh_token) or not tokens.expires_within(0, self._clock.now_ms())
        return ProfileStatus(
            name,
            settings.provider,
            "oauth",
            secret,
            True,
            valid,
            tokens.expires_at,
            tokens.account,
            configured,
        )

    def status(self) -> list[ProfileStatus]:
        """Every profile, whether its credentials are stored and usable (no network)."""
        return [self._status_of(n, p) for n, p in sorted(self.profiles().items())]


__all__ = [
    "ISSUER_ENV",
    "OAUTH_CLIENTS",
    "OPENAI_CODEX",
    "REFRESH_MARGIN_S",
    "AuthManager",
    "LoginMethod",
    "OAuthClient",
    "OAuthError",
    "ProfileStatus",
    "SignInExpiredError",
    "TokenSet",
    "oauth_client",
    "secret_name",
]
