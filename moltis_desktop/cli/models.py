"""`moltis models voice …` and `moltis models local …`: list, download, verify and remove
the voice models and the embedded local chat models.

These work on this machine's model cache directly (no gateway needed), so models can be
fetched before the first start, or on a machine that is offline later.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from moltis_desktop.cli.output import print_json, run

if TYPE_CHECKING:
    from pathlib import Path

    from moltis_desktop.config.settings import Settings
    from moltis_desktop.modelstore.manager import ModelManager as StoreManager
    from moltis_desktop.providers.local_catalog import LocalModelStatus
    from moltis_desktop.voice.models import ModelManager, ModelStatus

_LOGGER = logging.getLogger(__name__)

_REDRAW_S = 0.1
"""Fastest redraw of the progress bar on a terminal."""
_LINE_STEP = 10
"""Without a terminal, a line every this many percent."""
_BAR_WIDTH = 24


def add_models_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `models voice …` under the `models` command (`moltis models` alone lists the
    providers' chat models: cli/chat.py adds it first, so this comes after it)."""
    models = subparsers.choices.get("models") or subparsers.add_parser(
        "models", help="the models the providers offer, the voice models and the local models"
    )
    kinds = models.add_subparsers(dest="models_kind", metavar="KIND")
    voice = kinds.add_parser(
        "voice", help="speech-to-text, voice and wake-word models for voice on this machine"
    )
    actions = voice.add_subparsers(dest="models_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the known models and which are installed")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    download = actions.add_parser(
        "download", help="download models (resumes an interrupted download)"
    )
    download.add_argument("ids", nargs="+", metavar="ID", help="model id, e.g. whisper/tiny.en")
    verify = actions.add_parser("verify", help="check a downloaded model's files")
    verify.add_argument("ids", nargs="+", metavar="ID")
    remove = actions.add_parser("remove", help="delete a downloaded model")
    remove.add_argument("id", metavar="ID")
    _add_local_parser(kinds)


def _add_local_parser(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = kinds.add_parser(
        "local", help="the embedded local chat models (GGUF, run by llama.cpp on this machine)"
    )
    actions = local.add_subparsers(dest="models_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list", help="the known models, which are installed, the active and the recommended one"
    )
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    download = actions.add_parser(
        "download", help="download a model (resumes an interrupted download)"
    )
    download.add_argument(
        "id", nargs="?", metavar="ID",
        help="model id, e.g. qwen2.5-1.5b (default: the one recommended for this machine's RAM)",
    )  # fmt: skip
    remove = actions.add_parser("remove", help="delete a downloaded model")
    remove.add_argument("id", metavar="ID")


def _settings() -> tuple[Path, Settings]:
    from moltis_desktop.config.store import ConfigStore
    from moltis_desktop.core.paths import AppPaths

    paths = AppPaths.resolve()
    config = ConfigStore(paths.config_file, read_only=True)
    if config.error is not None:
        print(f"warning: {config.error}", file=sys.stderr)
    return paths.cache_dir, config.current.settings


def _manager() -> ModelManager:
    from moltis_desktop.voice.models import manager_for

    cache_dir, settings = _settings()
    return manager_for(cache_dir, settings.voice.model_mirror)


def is_models_store(args: argparse.Namespace) -> bool:
    """Whether the command line is `moltis models voice|local …` (rather than `moltis
    models`)."""
    return args.command == "models" and getattr(args, "models_kind", None) in ("voice", "local")


def cmd_models(args: argparse.Namespace) -> int:
    """`moltis models voice|local ACTION`."""
    if args.models_kind == "local":
        return cmd_models_local(args)
    manager = _manager()
    action = args.models_action
    if action == "list":
        statuses = manager.list()
        if args.json:
            print_json({"cacheDir": str(manager.cache_dir),
                        "models": [s.to_dict() for s in statuses]})  # fmt: skip
        else:
            _print_table(statuses)
        return 0
    if action == "download":
        for model_id in args.ids:  # all ids checked before any download starts
            manager.model(model_id)
        for model_id in args.ids:
            status = manager.status(model_id)
            if status.state:
                print(f"{model_id}: already installed ({status.state}): {status.path}")
                continue
            path = run(_download(manager, model_id, sys.stderr))
            print(f"{model_id}: downloaded to {path}")
        return 0
    if action == "verify":
        for model_id in args.ids:
            status = manager.verify(model_id)
            print(f"{model_id}: ok ({status.state}, {status.path})")
        return 0
    removed = manager.remove(args.id)
    print(f"{args.id}: {'removed' if removed else 'was not downloaded'}")
    return 0


def _print_table(statuses: list[ModelStatus]) -> None:
    rows = [("ID", "KIND", "SIZE", "STATE", "PATH")]
    for s in statuses:
        size = f"{s.model.size_bytes / 1e6:.1f} MB"
        rows.append((s.id, s.model.kind, size, s.state or "-", str(s.path or "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
        print("  ".join([*cells, row[4]]).rstrip())


# ---------------------------------------------------------------- local models

_LOCAL_STATES = {"downloaded": "downloaded", "package": "package", "": "not installed"}


def cmd_models_local(args: argparse.Namespace) -> int:
    """`moltis models local list|download|remove`."""
    from moltis_desktop.providers.local_catalog import local_model_manager

    cache_dir, settings = _settings()
    local = settings.models.local
    manager = local_model_manager(cache_dir, local.mirror)
    action = args.models_action
    if action == "list":
        statuses = manager.list()
        recommended = manager.recommended()
        configured = local.model.strip()
        active = configured or manager.best_installed() or ""
        if args.json:
            print_json({
                "cacheDir": str(manager.cache_dir),
                "active": active,
                "recommended": recommended,
                "models": [s.to_dict() for s in statuses],
            })  # fmt: skip
        else:
            _print_local_table(statuses, active=active, recommended=recommended)
            if configured and configured not in manager.catalog:
                print(f"\nmodels.local.model is {configured!r} (a file, not a catalog model)")
        return 0
    if action == "download":
        model_id = args.id or manager.recommended()
        model = manager.model(model_id)
        status = manager.status(model.id)
        if status.state and status.joined:
            print(f"{model.id}: already installed ({_local_state(status)}): {status.path}")
            return 0
        if not args.id:
            print(f"{model.id}: {model.title}, {model.size_bytes / 1e9:.2f} GB, recommended "
                  "for this machine", file=sys.stderr)  # fmt: skip
        path = run(_download(manager, model.id, sys.stderr))
        print(f"{model.id}: downloaded to {path}")
        return 0
    removed = manager.remove(args.id)
    print(f"{args.id}: {'removed' if removed else 'was not downloaded'}")
    return 0


def _local_state(status: LocalModelStatus) -> str:
    if status.state == "package" and status.model.tier == "builtin":
        return "built in"
    return _LOCAL_STATES[status.state]


def _print_local_table(statuses: list[LocalModelStatus], *, active: str, recommended: str) -> None:
    rows = [("", "ID", "TIER", "SIZE", "STATE", "TITLE")]
    for s in statuses:
        mark = "*" if s.id == active else ""
        note = " (recommended)" if s.id == recommended else ""
        size = f"{s.model.size_bytes / 1e6:.0f} MB"
        rows.append((mark, s.id, s.model.tier, size, _local_state(s), s.model.title + note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:5])]
        print("  ".join([*cells, row[5]]).rstrip())
    print("\n* the model the local provider runs (models.local.model, else the best installed)")


async def _download(manager: StoreManager[Any], model_id: str, out: TextIO) -> Path:
    bar = ProgressBar(model_id, out)
    try:
        return await manager.download(model_id, bar)
    finally:
        bar.close()


class ProgressBar:
    """A download's progress on stderr: a redrawn bar on a terminal, lines otherwise."""

    def __init__(self, label: str, out: TextIO) -> None:
        self.label = label
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0
        self._step = -1
        self._last = (0, 0)

    def __call__(self, done: int, total: int) -> None:
        self._last = (done, total)
        percent = int(done * 100 / total) if total else 0
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= _REDRAW_S or done >= total:
                self._drawn = now
                self.out.write("\r" + self.render(done, total))
                self.out.flush()
        elif percent // _LINE_STEP > self._step:
            self._step = percent // _LINE_STEP
            self.out.write(self.render(done, total) + "\n")
            self.out.flush()

    def render(self, done: int, total: int) -> str:
        percent = done * 100 / total if total else 0.0
        elapsed = max(time.monotonic() - self.started, 1e-6)
        speed = done / elapsed / 1e6
        text = f"{percent:3.0f}% {done / 1e6:.1f}/{total / 1e6:.1f} MB {speed:.1f} MB/s"
        if self.tty:
            filled = int(_BAR_WIDTH * percent / 100)
            text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {text}"
        return f"{self.label} {text}"

    def close(self) -> None:
        """End the bar's line (the last figures stay on screen)."""
        if self.tty and self._last != (0, 0):
            self.out.write("\r" + self.render(*self._last) + "\n")
            self.out.flush()
