"""`moltis onboard`: the first-run set-up without a window (the tray app shows the same
steps in a dialog). Interactive by default; every answer can be given as a flag."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.core.paths import AppPaths
from moltis_desktop.onboarding import (
    OLLAMA_URL,
    Choice,
    OnboardingError,
    Plan,
    apply,
    check_connection,
    choices,
    key_secret_name,
)


def add_onboard_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "onboard", help="set up a provider, its key, a model and the assistant's name"
    )
    p.add_argument("--provider", help="provider id (anthropic, openai, ollama, …)")
    p.add_argument(
        "--key-stdin", action="store_true", help="read the API key from stdin (not a prompt)"
    )
    p.add_argument("--key-env", help="read the API key from this environment variable")
    p.add_argument("--base-url", default="", help="the provider's API address (default: its own)")
    p.add_argument("--model", default="", help="model id (default: the provider's default)")
    p.add_argument("--name", default="", help="the assistant's name")
    p.add_argument(
        "--ollama-url", default=os.environ.get("OLLAMA_HOST", OLLAMA_URL), help=argparse.SUPPRESS
    )
    p.add_argument("--yes", action="store_true", help="ask nothing; use the flags and defaults")


def _ask(prompt: str, default: str = "") -> str:
    answer = input(f"{prompt}{f' [{default}]' if default else ''}: ").strip()
    return answer or default


def _pick(options: list[Choice], args: argparse.Namespace) -> Choice:
    if args.provider:
        for c in options:
            if c.id == args.provider:
                return c
        return Choice(args.provider, args.provider, needs_key=True)
    if args.yes:
        return options[0]
    print("Which provider should Moltis use?")
    for i, c in enumerate(options, 1):
        extra = f" ({len(c.models)} models installed)" if c.local and c.models else ""
        print(f"  {i}. {c.label}{extra}")
    while True:
        answer = _ask("Number", "1")
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return options[int(answer) - 1]
        print("  type one of the numbers above")


def _key(choice: Choice, args: argparse.Namespace) -> str:
    if not choice.needs_key:
        return ""
    if args.key_env:
        value = os.environ.get(args.key_env, "")
        if not value:
            raise OnboardingError(f"{args.key_env} is not set")
        return value
    if args.key_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return getpass.getpass(f"{choice.label} API key (kept in the OS keyring): ").strip()


def cmd_onboard(args: argparse.Namespace) -> int:
    paths = AppPaths.resolve()
    paths.ensure()
    store = ConfigStore(paths.config_file)
    options = asyncio.run(choices(args.ollama_url))
    choice = _pick(options, args)
    plan = Plan(provider=choice.id, key=_key(choice, args), base_url=args.base_url)
    if choice.id == "ollama" and not plan.base_url and args.ollama_url != OLLAMA_URL:
        plan.base_url = args.ollama_url.rstrip("/") + "/v1"
    plan.model = args.model
    print(f"Testing {choice.label}…", flush=True)
    models = asyncio.run(check_connection(plan))
    print(f"  it answered: {len(models)} models")
    if not args.yes and not args.model:
        shown = ", ".join(models[:12]) + (" …" if len(models) > 12 else "")
        print(f"  {shown}")
        plan.model = _ask("Model", plan.model)
    plan.assistant_name = args.name or ("" if args.yes else _ask("Name your assistant", "Molty"))
    secrets = SecretStore(paths.state_dir, backend=store.current.settings.secrets.backend)
    apply(plan, store, secrets)
    where = (
        f" (its key is in the secret store as {key_secret_name(plan.provider)})" if plan.key else ""
    )
    print(f"Saved: {plan.provider}/{plan.model}{where}. Config: {paths.config_file}")
    if plan.assistant_name:
        print(f"Your assistant is called {plan.assistant_name}.")
    print("Start chatting: `moltis gateway`, then `moltis dashboard` (or run `moltis-desktop`).")
    return 0
