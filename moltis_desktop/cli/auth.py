"""`moltis auth`: sign in to providers (OAuth or an API key), sign out, see who is signed in."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import TYPE_CHECKING

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.providers.oauth_tokens import OAUTH_CLIENTS

if TYPE_CHECKING:
    from moltis_desktop.config.secrets import SecretStore
    from moltis_desktop.config.settings import Settings
    from moltis_desktop.providers.oauth import AuthManager, LoginMethod, ProfileStatus

_OAUTH_PROVIDERS = ", ".join(OAUTH_CLIENTS)


def add_auth_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `auth login|logout|status` to the `moltis` parser."""
    auth = subparsers.add_parser("auth", help="sign in to providers (OAuth or an API key)")
    auth_sub = auth.add_subparsers(dest="auth_command", metavar="ACTION")
    auth_sub.required = True

    login = auth_sub.add_parser(
        "login",
        help="sign in to a provider in a browser (or with a code), or store its API key",
    )
    login.add_argument(
        "provider",
        nargs="?",
        help=f"provider id (OAuth: {_OAUTH_PROVIDERS}; any provider with --api-key); may be "
        "left out when --profile names an existing profile",
    )
    login.add_argument(
        "--profile",
        help="auth profile to store the credentials under (default: the provider's profile, "
        "else the provider id)",
    )
    how = login.add_mutually_exclusive_group()
    how.add_argument(
        "--device",
        action="store_true",
        help="sign in by typing a code on any device (no browser needed here)",
    )
    how.add_argument(
        "--api-key", action="store_true", help="store an API key (read from stdin or a prompt)"
    )
    login.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser; only print the address to open",
    )
    login.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the sign-in (default 300 in a browser, 900 with a code)",
    )

    logout = auth_sub.add_parser("logout", help="delete a profile's credentials")
    logout.add_argument("profile", help="auth profile name (see `moltis auth status`)")

    status = auth_sub.add_parser("status", help="show the auth profiles and who is signed in")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")


def _manager() -> tuple[AuthManager, Settings, SecretStore]:
    from moltis_desktop.config.secrets import SecretStore
    from moltis_desktop.config.store import ConfigStore
    from moltis_desktop.core.paths import AppPaths
    from moltis_desktop.providers.oauth import AuthManager

    paths = AppPaths.resolve()
    config = ConfigStore(paths.config_file, read_only=True)
    if config.error is not None:
        print(f"warning: {config.error}", file=sys.stderr)
    settings = config.current.settings
    store = SecretStore(paths.state_dir, backend=settings.secrets.backend)
    manager = AuthManager(store, settings.auth_profiles, state_dir=paths.state_dir)
    return manager, settings, store


def _read_api_key(provider: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"API key for {provider}: ")
    return sys.stdin.readline().strip()


def _until(expires_at: int | None) -> str:
    if expires_at is None:
        return ""
    left_s = expires_at / 1000 - time.time()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires_at / 1000))
    if left_s <= 0:
        return f"access token expired {when}"
    minutes = int(left_s // 60)
    span = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    return f"access token valid until {when} ({span})"


def _describe(entry: ProfileStatus) -> str:
    if entry.kind == "api_key":
        return "key stored" if entry.stored else "no key stored"
    if not entry.stored:
        return "not signed in"
    if not entry.valid:
        return "signed-in session expired: sign in again"
    who = entry.account.get("email") or entry.account.get("name") or "signed in"
    parts = [who, _until(entry.expires_at)]
    if entry.account.get("plan"):
        parts.append(f"plan {entry.account['plan']}")
    return "; ".join(p for p in parts if p)


def _print_status(entries: list[ProfileStatus]) -> None:
    if not entries:
        print(
            "No auth profiles. Sign in with `moltis auth login openai-codex`, or store a key "
            "with `moltis auth login <provider> --api-key`."
        )
        return
    rows = [("PROFILE", "PROVIDER", "KIND", "STATE")] + [
        (e.profile, e.provider, e.kind, _describe(e)) for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])


def _hint_for_agents(settings: Settings, profile: str) -> str | None:
    if any(agent.auth_profile == profile for agent in settings.agents.list):
        return None
    return f'Agents use it once their config names it: auth_profile = "{profile}" (in agents.list).'


def cmd_auth(args: argparse.Namespace) -> int:
    """Run `moltis auth <action>`."""
    from moltis_desktop.cli.output import print_json, run

    action = args.auth_command
    manager, settings, store = _manager()
    if action == "status":
        entries = manager.status()
        if args.json:
            print_json([e.to_dict() for e in entries])
        else:
            _print_status(entries)
        return 0
    if action == "logout":
        removed = run(manager.logout(args.profile))
        print(f"signed out of {args.profile}" if removed else f"{args.profile} was not signed in")
        return 0 if removed else 1
    if action == "login":
        return _login(args, manager, settings, store)
    raise MoltisError(f"unknown auth action {action!r}")


def _login(
    args: argparse.Namespace, manager: AuthManager, settings: Settings, store: SecretStore
) -> int:
    from moltis_desktop.cli.output import run
    from moltis_desktop.providers.oauth import OAUTH_CLIENTS

    provider = args.provider
    if not provider:
        known = manager.profiles().get(args.profile or "")
        if known is None:
            raise MoltisError(
                "name the provider to sign in to, e.g. `moltis auth login openai-codex` "
                f"(OAuth sign-in: {', '.join(sorted(OAUTH_CLIENTS))}; any provider's API key "
                "with --api-key)"
            )
        provider = known.provider
    method: LoginMethod = "api_key" if args.api_key else "device" if args.device else "pkce"
    api_key = _read_api_key(provider) if method == "api_key" else None
    entry = run(
        manager.login(
            provider,
            args.profile,
            method,
            open_browser=not args.no_browser,
            api_key=api_key,
            timeout_s=args.timeout,
        )
    )
    if method == "api_key":
        print(f"stored the API key for {provider} as auth profile {entry.profile!r}")
    else:
        who = entry.account.get("email") or "your account"
        print(f"signed in to {provider} as {who} (auth profile {entry.profile!r})")
    print(f"kept in the {store.backend.name}", file=sys.stderr)
    hint = _hint_for_agents(settings, entry.profile)
    if hint:
        print(hint, file=sys.stderr)
    return 0
