"""`moltis models voice …`: list, download, verify and remove the voice models.

These work on this machine's model cache directly (no gateway needed), so models can be
fetched before the first start, or on a machine that is offline later.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from moltis_desktop.cli.output import print_json, run

if TYPE_CHECKING:
    from pathlib import Path

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
        "models", help="the models the providers offer, and the voice models"
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


def _manager() -> ModelManager:
    from moltis_desktop.config.store import ConfigStore
    from moltis_desktop.core.paths import AppPaths
    from moltis_desktop.voice.models import manager_for

    paths = AppPaths.resolve()
    config = ConfigStore(paths.config_file, read_only=True)
    if config.error is not None:
        print(f"warning: {config.error}", file=sys.stderr)
    return manager_for(paths.cache_dir, config.current.settings.voice.model_mirror)


def is_models_voice(args: argparse.Namespace) -> bool:
    """Whether the command line is `moltis models voice …` (rather than `moltis models`)."""
    return args.command == "models" and getattr(args, "models_kind", None) == "voice"


def cmd_models(args: argparse.Namespace) -> int:
    """`moltis models voice ACTION`."""
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


async def _download(manager: ModelManager, model_id: str, out: TextIO) -> Path:
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
