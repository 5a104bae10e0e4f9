"""`moltis onboard`: the first-run set-up without a window (the tray app shows the same
steps in a dialog). Interactive by default; every answer can be given as a flag.

The local model (`--provider local`) needs no key: a model not installed is downloaded with
the progress bar `moltis models local download` draws; `--model builtin` skips the download.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import TYPE_CHECKING

from moltis_desktop.cli.models import ProgressBar
from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.core.paths import AppPaths
from moltis_desktop.onboarding import (
    LOCAL,
    OLLAMA_URL,
    Choice,
    OnboardingError,
    Plan,
    apply,
    check_connection,
    check_local,
    choices,
    install_local,
    key_secret_name,
    local_model_id,
    needs_download,
    short_title,
    size_text,
)
from moltis_desktop.providers.local_catalog import BUILTIN_MODEL, local_model_manager

if TYPE_CHECKING:
    from moltis_desktop.providers.local_catalog import LocalModelManager


def add_onboard_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "onboard", help="set up a provider, its key, a model and the assistant's name"
    )
    p.add_argument(
        "--provider",
        help="provider id (local: the model on this computer, no account needed; ollama, "
        "anthropic, openai, …)",
    )
    p.add_argument(
        "--key-stdin", action="store_true", help="read the API key from stdin (not a prompt)"
    )
    p.add_argument("--key-env", help="read the API key from this environment variable")
    p.add_argument("--base-url", default="", help="the provider's API address (default: its own)")
    p.add_argument(
        "--model",
        default="",
        help="model id (default: the provider's default; for local, the one recommended for "
        "this computer, downloaded if needed: `builtin` needs no download)",
    )
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
        extra = f" ({len(c.models)} models installed)" if c.id == "ollama" and c.models else ""
        print(f"  {i}. {c.label}{extra}")
        for line in c.detail.splitlines():
            print(f"       {line}")
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
    local = local_model_manager(paths.cache_dir, store.current.settings.models.local.mirror)
    while True:
        options = asyncio.run(choices(args.ollama_url, local))
        choice = _pick(options, args)
        if choice.id == LOCAL:
            local_plan = _local_plan(choice, local, args)
            if local_plan is None:
                continue  # back to the providers
            plan = local_plan
            break
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
        break
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


# ---------------------------------------------------------------- the local model


def _interactive(args: argparse.Namespace) -> bool:
    return not args.yes and sys.stdin.isatty()


def _local_plan(
    choice: Choice, manager: LocalModelManager, args: argparse.Namespace
) -> Plan | None:
    """Pick a local model and install it (downloading it with a progress bar); None to go
    back to the providers. No key, no request but the download."""
    model = local_model_id(args.model)
    while True:
        if not model and _interactive(args):
            picked = _pick_local(choice)
            if picked is None:
                return None
            model = picked
        plan = Plan(provider=LOCAL, model=model)
        check_local(plan, manager)  # no key, no request
        if not needs_download(plan, manager):
            print(f"{short_title(manager.catalog[plan.model].title)}: installed, no download.")
            return plan
        entry = manager.catalog[plan.model]
        title, size = short_title(entry.title), size_text(entry.size_bytes)
        print(f"Downloading {title} ({size}), checksummed…", flush=True)
        try:
            path = asyncio.run(_download(plan, manager))
        except OnboardingError as exc:
            if not _interactive(args):
                raise OnboardingError(
                    f"{exc.message}. Rerun `moltis onboard --provider local` to try again (the "
                    "download resumes where it stopped), or add `--model builtin` for the "
                    "built-in model (no download)"
                ) from None
            print(f"moltis: {exc.message}.", file=sys.stderr)
            print("  1. Try again (it resumes where it stopped)")
            print(f"  2. Use the built-in {BUILTIN_MODEL} (no download)")
            print("  3. Back: choose another model")
            answer = _ask("Number", "1")
            if answer == "2":
                model = BUILTIN_MODEL
            elif answer == "3":
                model = ""
            continue
        print(f"{title}: downloaded to {path}")
        return plan


def _pick_local(choice: Choice) -> str | None:
    """Ask which local model; None to go back."""
    print("Which local model? It runs on this computer, offline; no account needed.")
    for i, option in enumerate(choice.local_models, 1):
        print(f"  {i}. {option.label}")
    print("  0. Back: choose another provider")
    default = next(
        (str(i) for i, o in enumerate(choice.local_models, 1) if o.id == choice.default_model),
        "1",
    )
    while True:
        answer = _ask("Number (or a model id)", default)
        if answer == "0":
            return None
        if answer.isdigit() and 1 <= int(answer) <= len(choice.local_models):
            return choice.local_models[int(answer) - 1].id
        if local_model_id(answer) in choice.models:
            return local_model_id(answer)
        print("  type one of the numbers above")


async def _download(plan: Plan, manager: LocalModelManager) -> str:
    bar = ProgressBar(plan.model, sys.stderr)
    try:
        return str(await install_local(plan, manager, bar))
    finally:
        bar.close()
