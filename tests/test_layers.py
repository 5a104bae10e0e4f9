"""The layering rules are executable: import-linter contracts, and headless never loads Qt."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from tests.support.process import BIN, run_python

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_qt_ban_covers_every_module_but_desktop() -> None:
    # A forbidden contract only checks the modules it lists: a new package must be added.
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (qt,) = [c for c in contracts["contracts"] if c["type"] == "forbidden"]
    package = ROOT / "moltis_desktop"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in package.glob("*/__init__.py")}
    expected = {f"moltis_desktop.{m}" for m in modules - {"desktop"}}
    assert set(qt["source_modules"]) == expected


HEADLESS = """
import asyncio, sys
from moltis_desktop.runtime import Runtime
from moltis_desktop.cli import build_parser
import moltis_desktop.desktop.launcher
async def main():
    runtime = Runtime(env={"MOLTIS_HOME": sys.argv[1], "MOLTIS_TOKEN": "t-0123456789"},
                      overrides={"gateway": {"port": 0}}, console=None, prompt=None)
    await runtime.start()
    await runtime.stop()
asyncio.run(main())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               {"PySide6", "qasync", "shiboken6", "anthropic", "openai", "keyring", "watchfiles"})
print(",".join(heavy) or "none")
"""


def test_headless_start_never_imports_qt_or_heavy_sdks(tmp_path: Path) -> None:
    # watchfiles too: the canvas's live reload loads it with the first live socket.
    assert run_python(HEADLESS, str(tmp_path)) == "none"


def test_no_package_may_grow_an_import_circle() -> None:
    # The acyclic_siblings contract covers every package at every depth (lint-imports runs it
    # in test_import_contracts_hold): server.py importing its own handlers, a dialog and its
    # rows importing each other, are the circles it exists to keep out.
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (acyclic,) = [c for c in contracts["contracts"] if c["type"] == "acyclic_siblings"]
    assert acyclic["ancestors"] == ["moltis_desktop"]
    assert "skip_descendants" not in acyclic and "ignore_imports" not in acyclic
    assert acyclic.get("depth", 10) >= 10
