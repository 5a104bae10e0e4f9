"""OAuth sign-in (browser + PKCE, device code), token refresh, and `moltis auth`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from moltis_desktop.cli import build_parser
from moltis_desktop.cli.auth import cmd_auth
from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import AuthProfileSettings
from moltis_desktop.core.clock import ManualClock
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import configure_logging
from moltis_desktop.providers.oauth import (
    OPENAI_CODEX,
    AuthManager,
    OAuthClient,
    OAuthError,
    SignInExpiredError,
)
from moltis_desktop.providers.oauth_flows import authorize_url, make_pkce, system_browser
from moltis_desktop.providers.oauth_tokens import DEVICE_GRANT, exchange_code, oauth_client
from tests.support.fake_oauth import FakeOAuthServer, browse
from tests.support.keyrings import MemoryKeyring

# A standards-only issuer (RFC 8628 device grant, RFC 7009 revocation), unlike OpenAI's.
EXAMPLE = OAuthClient(
    provider="example",
    client_id="moltis-test",
    issuer="https://issuer.invalid",
    scopes=("openid", "offline_access"),
    revocation_path="/oauth/revoke",
)
CLIENTS = {"openai-codex": OPENAI_CODEX, "example": EXAMPLE}
WAIT = 10.0


class FakeTime:
    """The clock and the sleep of the device flow: sleeping moves the clock, instantly."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def fake(caplog: pytest.LogCaptureFixture) -> AsyncIterator[FakeOAuthServer]:
    """The fake issuer; at the end, no code or token it issued may be in the log records."""
    caplog.set_level(logging.DEBUG)
    async with FakeOAuthServer() as server:
        yield server
    formatter = logging.Formatter("%(message)s")
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    _no_secrets_in("\n".join(formatter.format(r) for r in records), server)


@pytest.fixture
def store(tmp_path: Path, memory_keyring: MemoryKeyring) -> SecretStore:
    return SecretStore(tmp_path / "state", backend="keyring")


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def lines() -> list[str]:
    return []


MakeManager = Callable[..., AuthManager]


@pytest.fixture
def make_manager(
    fake: FakeOAuthServer,
    store: SecretStore,
    fake_time: FakeTime,
    lines: list[str],
    tmp_path: Path,
) -> MakeManager:
    def make(**kwargs: Any) -> AuthManager:
        options: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "clock": fake_time.clock,
            "sleep": fake_time.sleep,
            "notify": lines.append,
            "issuer": fake.issuer,
            "clients": CLIENTS,
            "redirect_port": 0,
        }
        options.update(kwargs)
        profiles = options.pop("profiles", None)
        return AuthManager(store, profiles, **options)

    return make


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _no_secrets_in(text: str, fake: FakeOAuthServer) -> None:
    for value in fake.issued:
        assert value not in text


# ---------------------------------------------------------------- browser flow (PKCE)


async def test_browser_sign_in_end_to_end(
    fake: FakeOAuthServer,
    make_manager: MakeManager,
    store: SecretStore,
    http_session: aiohttp.ClientSession,
    lines: list[str],
) -> None:
    visits: list[asyncio.Task[tuple[int, str]]] = []

    async def browser(url: str) -> bool:
        visits.append(asyncio.ensure_future(browse(http_session, url)))
        return True

    manager = make_manager(browser=browser)
    entry = await asyncio.wait_for(manager.login("openai-codex"), WAIT)
    status, page = await asyncio.wait_for(visits[0], WAIT)
    assert status == 200
    assert "You can close this tab" in page

    query = fake.calls("/oauth/authorize")[0].query
    assert query["client_id"] == "app_EMoamEEZ73f0CkXaXp7hrann"
    assert query["scope"] == "openid profile email offline_access"
    assert query["code_challenge_method"] == "S256"
    assert query["id_token_add_organizations"] == "true"
    assert query["codex_cli_simplified_flow"] == "true"
    assert query["redirect_uri"].startswith("http://localhost:")
    assert query["redirect_uri"].endswith("/auth/callback")
    exchange = fake.calls("/oauth/token", "authorization_code")[0].form
    assert _challenge(exchange["code_verifier"]) == query["code_challenge"]
    assert exchange["redirect_uri"] == query["redirect_uri"]
    # The address is always printed, even when a browser opened.
    assert any(fake.issuer + "/oauth/authorize?" in line for line in lines)

    assert entry.profile == "openai-codex"
    assert entry.valid
    assert entry.account["email"] == "ada@example.com"
    assert entry.account["account_id"] == "acct-1234"
    assert entry.account["plan"] == "plus"
    stored = json.loads(store.get("auth-openai-codex") or "{}")
    assert stored["access_token"] in fake.issued
    assert stored["refresh_token"] in fake.issued
    assert stored["expires_at"] == ManualClock().now_ms() + 3600 * 1000
    assert manager.profiles()["openai-codex"] == AuthProfileSettings("openai-codex", "oauth")
    tokens = manager.tokens("openai-codex")
    assert tokens is not None
    assert tokens.access_token not in repr(tokens)
    _no_secrets_in("\n".join(lines), fake)


async def _printed_url(lines: list[str]) -> str:
    async def wait() -> str:
        while True:
            for line in lines:
                if "/oauth/authorize?" in line:
                    return line.split()[-1]
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(wait(), WAIT)


async def test_a_redirect_with_the_wrong_state_is_refused(
    fake: FakeOAuthServer,
    make_manager: MakeManager,
    http_session: aiohttp.ClientSession,
    lines: list[str],
) -> None:
    manager = make_manager()
    login = asyncio.ensure_future(manager.login("openai-codex", open_browser=False))
    url = await _printed_url(lines)
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0].replace("localhost", "127.0.0.1")

    status, page = await asyncio.wait_for(
        browse(http_session, f"{redirect}?code=forged-code&state=not-the-state"), WAIT
    )
    assert status == 400
    assert "out of date" in page
    await asyncio.sleep(0.05)
    assert not login.done()

    status, page = await asyncio.wait_for(browse(http_session, url), WAIT)
    assert status == 200
    entry = await asyncio.wait_for(login, WAIT)
    assert entry.valid
    codes = [r.form["code"] for r in fake.calls("/oauth/token", "authorization_code")]
    assert codes
    assert "forged-code" not in codes


async def test_declined_in_the_browser(
    fake: FakeOAuthServer,
    make_manager: MakeManager,
    http_session: aiohttp.ClientSession,
    lines: list[str],
) -> None:
    fake.authorize_error = "access_denied"
    manager = make_manager()
    login = asyncio.ensure_future(manager.login("openai-codex", open_browser=False))
    status, _ = await asyncio.wait_for(browse(http_session, await _printed_url(lines)), WAIT)
    assert status == 400
    with pytest.raises(OAuthError, match="declined or failed in the browser"):
        await asyncio.wait_for(login, WAIT)
    assert manager.status() == []


async def test_no_answer_from_the_browser_times_out(
    fake: FakeOAuthServer, make_manager: MakeManager
) -> None:
    manager = make_manager()
    with pytest.raises(OAuthError, match="no answer from the browser within 0 s"):
        await asyncio.wait_for(
            manager.login("openai-codex", open_browser=False, timeout_s=0.05), WAIT
        )


async def test_a_busy_redirect_port_falls_back_to_a_free_one(
    fake: FakeOAuthServer,
    make_manager: MakeManager,
    http_session: aiohttp.ClientSession,
    lines: list[str],
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        manager = make_manager(redirect_port=port)
        login = asyncio.ensure_future(manager.login("openai-codex", open_browser=False))
        url = await _printed_url(lines)
        redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        assert urlsplit(redirect).port not in (None, port)
        assert any(f"port {port} is busy" in line for line in lines)
        await asyncio.wait_for(browse(http_session, url), WAIT)
        assert (await asyncio.wait_for(login, WAIT)).valid


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="X11/Wayland check")
async def test_no_browser_is_started_without_a_graphical_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert await system_browser("http://127.0.0.1:9/") is False


async def test_a_wrong_pkce_verifier_is_rejected(
    fake: FakeOAuthServer, http_session: aiohttp.ClientSession
) -> None:
    client = oauth_client("openai-codex", issuer=fake.issuer)
    redirect_uri = "http://localhost:9/auth/callback"

    async def code_for(challenge_of: str) -> tuple[str, str]:
        pkce = make_pkce()
        url = authorize_url(client, redirect_uri=redirect_uri, pkce=pkce, state=challenge_of)
        async with http_session.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            return parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0], pkce.verifier

    code, _ = await code_for("a")
    with pytest.raises(OAuthError, match="invalid_grant: PKCE verification failed"):
        await exchange_code(
            http_session,
            client,
            code=code,
            verifier=make_pkce().verifier,
            redirect_uri=redirect_uri,
            now_ms=0,
        )
    code, verifier = await code_for("b")
    tokens = await exchange_code(
        http_session, client, code=code, verifier=verifier, redirect_uri=redirect_uri, now_ms=0
    )
    assert tokens.access_token in fake.issued


# ---------------------------------------------------------------- device flow


async def test_device_flow_pending_then_approved(
    fake: FakeOAuthServer, make_manager: MakeManager, fake_time: FakeTime, lines: list[str]
) -> None:
    manager = make_manager()
    entry = await asyncio.wait_for(manager.login("example", method="device"), WAIT)
    assert entry.valid
    assert entry.profile == "example"
    assert fake_time.sleeps == [5, 5, 5]
    polls = fake.calls("/oauth/token", DEVICE_GRANT)
    assert len(polls) == 3
    assert fake.calls("/oauth/device/code")[0].form["scope"] == "openid offline_access"
    shown = "\n".join(lines)
    assert "WDJB-MJHT" in shown
    assert f"{fake.issuer}/device" in shown
    _no_secrets_in(shown, fake)


async def test_device_flow_honours_slow_down(
    fake: FakeOAuthServer, make_manager: MakeManager, fake_time: FakeTime
) -> None:
    fake.device_mode = "slow_down"
    await asyncio.wait_for(make_manager().login("example", method="device"), WAIT)
    assert fake_time.sleeps == [5, 10, 10]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("deny", "declined on the other device"),
        ("expire", "the code expired before the sign-in finished"),
    ],
)
async def test_device_flow_denied_or_expired(
    fake: FakeOAuthServer, make_manager: MakeManager, mode: str, message: str
) -> None:
    fake.device_mode = mode  # type: ignore[assignment]
    manager = make_manager()
    with pytest.raises(OAuthError, match=message):
        await asyncio.wait_for(manager.login("example", method="device"), WAIT)
    assert manager.status() == []


async def test_device_flow_gives_up_at_the_overall_timeout(
    fake: FakeOAuthServer, make_manager: MakeManager, fake_time: FakeTime
) -> None:
    fake.device_mode = "pending"
    manager = make_manager()
    with pytest.raises(OAuthError, match="run `moltis auth login example --device` again"):
        await asyncio.wait_for(manager.login("example", method="device", timeout_s=30), WAIT)
    assert len(fake.calls("/oauth/token", DEVICE_GRANT)) == 6
    assert sum(fake_time.sleeps) == 35


async def test_openai_device_variant(
    fake: FakeOAuthServer, make_manager: MakeManager, lines: list[str], fake_time: FakeTime
) -> None:
    entry = await asyncio.wait_for(make_manager().login("openai-codex", method="device"), WAIT)
    assert entry.account["email"] == "ada@example.com"
    assert fake.calls("/api/accounts/deviceauth/usercode")[0].form == {
        "client_id": OPENAI_CODEX.client_id
    }
    assert len(fake.calls("/api/accounts/deviceauth/token")) == 3
    exchange = fake.calls("/oauth/token", "authorization_code")[0].form
    assert exchange["redirect_uri"] == f"{fake.issuer}/deviceauth/callback"
    assert "ABCD-1234" in "\n".join(lines)
    assert f"{fake.issuer}/codex/device" in "\n".join(lines)


# ---------------------------------------------------------------- refresh


async def test_access_token_is_refreshed_a_minute_before_expiry(
    fake: FakeOAuthServer,
    make_manager: MakeManager,
    fake_time: FakeTime,
    store: SecretStore,
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "moltis.log"
    configure_logging(level="debug", log_file=log_file, console=None)
    manager = make_manager()
    await asyncio.wait_for(manager.login("openai-codex", method="device"), WAIT)
    first = await manager.access_token("openai-codex")
    before = json.loads(store.get("auth-openai-codex") or "{}")
    assert first == before["access_token"]

    fake_time.clock.advance(3600 - 61)
    assert await manager.access_token("openai-codex") == first
    assert fake.calls("/oauth/token", "refresh_token") == []

    fake_time.clock.advance(2)
    second = await asyncio.wait_for(manager.access_token("openai-codex"), WAIT)
    assert second != first
    refreshes = fake.calls("/oauth/token", "refresh_token")
    assert [r.form["refresh_token"] for r in refreshes] == [before["refresh_token"]]
    after = json.loads(store.get("auth-openai-codex") or "{}")
    assert after["access_token"] == second
    assert after["refresh_token"] != before["refresh_token"]  # rotated
    assert after["account"]["email"] == "ada@example.com"
    # A second manager (another process) reads the refreshed tokens from the store.
    assert await make_manager().access_token("openai-codex") == second

    configure_logging(console=None)
    log_text = log_file.read_text()
    assert "refreshing the sign-in for openai-codex" in log_text
    _no_secrets_in(log_text, fake)


async def test_concurrent_callers_share_one_refresh(
    fake: FakeOAuthServer, make_manager: MakeManager, fake_time: FakeTime
) -> None:
    manager = make_manager()
    await asyncio.wait_for(manager.login("openai-codex", method="device"), WAIT)
    fake_time.clock.advance(3600)
    fake.token_delay_s = 0.1
    tokens = await asyncio.wait_for(
        asyncio.gather(*(manager.access_token("openai-codex") for _ in range(8))), WAIT
    )
    assert len(set(tokens)) == 1
    assert len(fake.calls("/oauth/token", "refresh_token")) == 1


async def test_a_dead_refresh_token_says_to_sign_in_again(
    fake: FakeOAuthServer, make_manager: MakeManager, fake_time: FakeTime
) -> None:
    manager = make_manager()
    await asyncio.wait_for(manager.login("openai-codex", method="device"), WAIT)
    fake.invalidate_refresh_tokens()
    fake_time.clock.advance(3601)
    with pytest.raises(SignInExpiredError) as caught:
        await asyncio.wait_for(manager.access_token("openai-codex"), WAIT)
    assert str(caught.value) == (
        "the sign-in for openai-codex has expired: run `moltis auth login openai-codex`"
    )
    [entry] = manager.status()
    assert entry.stored
    assert not entry.valid
    # No second attempt with the dead token.
    with pytest.raises(SignInExpiredError):
        await asyncio.wait_for(manager.access_token("openai-codex"), WAIT)
    assert len(fake.calls("/oauth/token", "refresh_token")) == 1


async def test_not_signed_in_and_unknown_profiles(make_manager: MakeManager) -> None:
    manager = make_manager(profiles={"codex": AuthProfileSettings("openai-codex", "oauth")})
    with pytest.raises(OAuthError, match="codex is not signed in: run `moltis auth login"):
        await manager.access_token("codex")
    with pytest.raises(OAuthError, match="no auth profile named 'nope'"):
        await manager.access_token("nope")
    with pytest.raises(OAuthError, match="'anthropic' has no OAuth sign-in"):
        await manager.login("anthropic")


# ---------------------------------------------------------------- logout / status / API keys


async def test_logout_revokes_and_deletes(
    fake: FakeOAuthServer, make_manager: MakeManager, store: SecretStore
) -> None:
    manager = make_manager()
    await asyncio.wait_for(manager.login("example", method="device"), WAIT)
    refresh = json.loads(store.get("auth-example") or "{}")["refresh_token"]
    assert await asyncio.wait_for(manager.logout("example"), WAIT)
    assert fake.revoked == [refresh]
    assert store.get("auth-example") is None
    assert "auth-example" not in store.names()
    assert manager.status() == []
    with pytest.raises(OAuthError, match="no auth profile named 'example'"):
        await manager.logout("example")


async def test_logout_deletes_even_when_revocation_fails(
    fake: FakeOAuthServer, make_manager: MakeManager, store: SecretStore
) -> None:
    fake.revoke_status = 500
    manager = make_manager(profiles={"mine": AuthProfileSettings("example", "oauth")})
    await asyncio.wait_for(manager.login("example", method="device"), WAIT)
    assert store.get("auth-mine") is not None
    assert await asyncio.wait_for(manager.logout("mine"), WAIT)
    assert store.get("auth-mine") is None
    assert len(fake.calls("/oauth/revoke")) == 1
    # A configured profile stays, signed out.
    [entry] = manager.status()
    assert (entry.profile, entry.stored, entry.valid) == ("mine", False, False)


async def test_status_lists_api_key_and_oauth_profiles(
    fake: FakeOAuthServer, make_manager: MakeManager, fake_time: FakeTime, store: SecretStore
) -> None:
    profiles = {
        "work": AuthProfileSettings("anthropic", "api_key"),
        "codex": AuthProfileSettings("openai-codex", "oauth", secret="codex-tokens"),
    }
    manager = make_manager(profiles=profiles)
    assert [e.to_dict() for e in manager.status()] == [
        {
            "profile": "codex",
            "provider": "openai-codex",
            "kind": "oauth",
            "secret": "codex-tokens",
            "stored": False,
            "valid": False,
            "expires_at": None,
            "account": {},
            "configured": True,
        },
        {
            "profile": "work",
            "provider": "anthropic",
            "kind": "api_key",
            "secret": "auth-work",
            "stored": False,
            "valid": False,
            "expires_at": None,
            "account": {},
            "configured": True,
        },
    ]
    await manager.login("anthropic", method="api_key", api_key=" sk-ant-test-123456\n")
    await asyncio.wait_for(manager.login("openai-codex", method="device"), WAIT)
    await manager.login("openai", method="api_key", api_key="sk-openai-test-654321")
    assert store.get("auth-work") == "sk-ant-test-123456"
    assert await manager.access_token("work") == "sk-ant-test-123456"
    entries = {e.profile: e for e in manager.status()}
    assert set(entries) == {"codex", "work", "openai"}
    assert entries["codex"].valid
    assert entries["codex"].expires_at == fake_time.clock.now_ms() + 3600 * 1000
    assert entries["codex"].account["email"] == "ada@example.com"
    assert store.get("codex-tokens") is not None
    assert entries["work"].stored
    assert entries["work"].valid
    assert entries["openai"].configured is False
    # Expired but refreshable still counts as valid.
    fake_time.clock.advance(7200)
    assert {e.profile: e.valid for e in manager.status()}["codex"]
    with pytest.raises(OAuthError, match="'work' is for anthropic"):
        await manager.login("openai", "work", method="api_key", api_key="sk-x-123456")
    with pytest.raises(OAuthError, match="the API key is empty"):
        await manager.login("openai", method="api_key", api_key="  ")


# ---------------------------------------------------------------- the CLI


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)  # the real `moltis` parser


@pytest.fixture
def cli_home(
    fake: FakeOAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path / "cli-home"
    monkeypatch.setenv("MOLTIS_HOME", str(home))
    monkeypatch.setenv("MOLTIS_SECRETS_PASSPHRASE", "cli passphrase 42")
    monkeypatch.setenv("MOLTIS_OAUTH_ISSUER", fake.issuer)
    fake.interval = 0  # the CLI sleeps for real
    yield home
    for path in home.rglob("*"):
        if path.is_file():
            _no_secrets_in(path.read_text(errors="replace"), fake)


async def _cli(*argv: str) -> int:
    # cmd_auth runs its own event loop (asyncio.run), so it gets a thread.
    return await asyncio.wait_for(asyncio.to_thread(cmd_auth, _args(*argv)), 30)


async def test_cli_login_status_logout(
    fake: FakeOAuthServer,
    cli_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await _cli("auth", "status", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert await _cli("auth", "status") == 0
    assert "No auth profiles" in capsys.readouterr().out

    assert await _cli("auth", "login", "openai-codex", "--device") == 0
    out, err = capsys.readouterr()
    assert "signed in to openai-codex as ada@example.com (auth profile 'openai-codex')" in out
    assert "ABCD-1234" in err
    assert f"{fake.issuer}/codex/device" in err
    assert "encrypted file" in err
    assert 'auth_profile = "openai-codex"' in err

    monkeypatch.setattr("sys.stdin", io.StringIO("sk-ant-cli-key-0001\n"))
    assert await _cli("auth", "login", "anthropic", "--api-key", "--profile", "claude") == 0
    assert "stored the API key for anthropic as auth profile 'claude'" in capsys.readouterr().out
    assert "sk-ant-cli-key-0001" not in (cli_home / "state" / "secrets.enc").read_text()

    assert await _cli("auth", "status", "--json") == 0
    entries = {e["profile"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["openai-codex"]["valid"] is True
    assert entries["openai-codex"]["account"]["account_id"] == "acct-1234"
    assert entries["openai-codex"]["expires_at"] > 0
    assert entries["claude"]["kind"] == "api_key"
    assert entries["claude"]["stored"] is True
    assert await _cli("auth", "status") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["PROFILE", "PROVIDER", "KIND", "STATE"]
    assert table[1].split()[:3] == ["claude", "anthropic", "api_key"]
    assert "key stored" in table[1]
    assert "ada@example.com; access token valid until" in table[2]

    assert await _cli("auth", "logout", "openai-codex") == 0
    assert "signed out of openai-codex" in capsys.readouterr().out
    with pytest.raises(MoltisError, match="no auth profile named 'openai-codex'"):
        await _cli("auth", "logout", "openai-codex")
    with pytest.raises(MoltisError, match="name the provider to sign in to"):
        await _cli("auth", "login")
    with pytest.raises(MoltisError, match="'anthropic' has no OAuth sign-in"):
        await _cli("auth", "login", "anthropic", "--device")
