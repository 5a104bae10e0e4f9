"""Build a runnable one-folder bundle of Moltis Desktop with PyInstaller, offline:
dist/moltis-desktop/moltis-desktop (moltis-desktop.exe on Windows).

    .venv/bin/python installer/build.py            # build, or reuse an up-to-date bundle
    .venv/bin/python installer/build.py --force    # rebuild regardless
    .venv/bin/python installer/build.py --no-webengine   # smaller, but no chat window

The entry point is moltis_desktop/desktop/launcher.py (`main()`): the tray app where there is
a display, the headless gateway with MOLTIS_HEADLESS=1 or without one. The web app's files
(moltis_desktop/web/**, read through importlib.resources) are bundled as package data.
QtWebEngine (the chat window) is included by default.

Idempotent: the bundle is reused when a fingerprint of its inputs (the package's files,
this script, the installed distributions and their versions, the options) matches the one
recorded next to it in dist/moltis-desktop.stamp. Concurrent runs (pytest-xdist workers)
wait on a lock. The last line printed is the bundle's path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NAME = "moltis-desktop"
DIST = ROOT / "dist"
BUNDLE = DIST / NAME
STAMP = DIST / f"{NAME}.stamp"
WORK = ROOT / "build" / "pyinstaller"
ENTRY = ROOT / "moltis_desktop" / "desktop" / "launcher.py"
PACKAGE = ROOT / "moltis_desktop"
WEB = PACKAGE / "web"
ICONS = ROOT / "resources" / "icons"

# Imported by name at run time (importlib), which PyInstaller's analysis cannot see: the
# built-in plugins (collected with all of moltis_desktop) and the providers' SDKs.
HIDDEN_IMPORTS = ("anthropic", "openai")
# Never used by the app, but pulled in through optional imports of its dependencies.
EXCLUDES = (
    "tkinter",
    "_tkinter",
    "pytest",
    "IPython",
    "matplotlib",
    # pydantic (the SDKs use it) ships a mypy plugin, which would bring all of mypy along.
    "pydantic.mypy",
    "mypy",
    # httpx's command line (rich, click, pygments): the SDKs only use httpx as a library.
    "httpx2._main",
    "httpx._main",
    "rich",
    "pygments",
    "markdown_it",
    "click",
)
# Qt's Python modules for QML/Quick: QtWebEngine's hook asks for them (its C++ library links
# Qt Quick), which makes PyInstaller collect every QML plugin - Quick 3D, Charts, Location...
# (~150 MB). The Qt libraries QtWebEngine links are still bundled (found by ldd); the Python
# modules are never imported by the app.
QT_EXCLUDES = ("PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuickWidgets", "PySide6.QtQuick3D")
WEBENGINE_MODULES = (
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel",
)


def say(message: str) -> None:
    sys.stderr.write(f"build: {message}\n")


def executable(bundle: Path = BUNDLE) -> Path:
    return bundle / (f"{NAME}.exe" if sys.platform == "win32" else NAME)


def bundled_package_root(bundle: Path = BUNDLE) -> Path:
    """Where the bundle keeps moltis_desktop's data files (PyInstaller >= 6: _internal/)."""
    return bundle / "_internal" / "moltis_desktop"


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(*, webengine: bool) -> dict[str, Any]:
    """Everything the bundle depends on; a different value means it must be rebuilt."""
    import sysconfig
    from importlib import metadata

    import PyInstaller
    import PySide6

    # The environment's packages (not whatever else is on sys.path, e.g. the current dir).
    site = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    installed = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=site)}
    )
    return {
        "package": _tree_digest(PACKAGE),
        "installed": hashlib.sha256("\n".join(installed).encode()).hexdigest(),
        "icons": _tree_digest(ICONS),
        "script": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "python": sys.version,
        "environment": sys.prefix,
        "pyinstaller": PyInstaller.__version__,
        "pyside6": PySide6.__version__,
        "webengine": webengine,
    }


def is_fresh(*, webengine: bool) -> bool:
    if not executable().is_file() or not STAMP.is_file():
        return False
    try:
        recorded = json.loads(STAMP.read_text())
    except ValueError:
        return False
    return bool(recorded == fingerprint(webengine=webengine))


def pyinstaller_args(*, webengine: bool) -> list[str]:
    args = [
        "--noconfirm",
        "--onedir",
        "--name",
        NAME,
        "--distpath",
        str(DIST),
        "--workpath",
        str(WORK),
        "--specpath",
        str(WORK),
        "--paths",
        str(ROOT),
        "--log-level",
        "WARN",
        "--collect-submodules",
        "moltis_desktop",
        "--add-data",
        f"{WEB}{os.pathsep}moltis_desktop/web",
    ]
    for module in HIDDEN_IMPORTS:
        args += ["--hidden-import", module]
    excludes = EXCLUDES + QT_EXCLUDES + (() if webengine else WEBENGINE_MODULES)
    for module in excludes:
        args += ["--exclude-module", module]
    if sys.platform == "darwin":
        # A windowed .app (dist/moltis-desktop.app) next to the folder; untested here.
        args += ["--windowed", "--icon", str(ICONS / "moltis.icns")]
        args += ["--osx-bundle-identifier", "org.moltis.moltis-desktop"]
    elif sys.platform == "win32":
        # No console window for the tray app; untested here.
        args += ["--windowed", "--icon", str(ICONS / "moltis.ico")]
    return [*args, str(ENTRY)]


def check_bundle() -> None:
    """The bundle has its executable and the web app's files where importlib.resources
    looks for them."""
    missing = [
        path
        for path in (
            executable(),
            bundled_package_root() / "web" / "index.html",
            bundled_package_root() / "web" / "js" / "app.js",
        )
        if not path.is_file()
    ]
    if missing:
        raise SystemExit(f"build: the bundle is incomplete, missing {missing}")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(*, force: bool = False, webengine: bool = True) -> Path:
    """Build the bundle unless an up-to-date one exists; returns its directory."""
    from filelock import FileLock

    WORK.mkdir(parents=True, exist_ok=True)
    with FileLock(str(WORK.parent / "pyinstaller.lock")):
        if not force and is_fresh(webengine=webengine):
            say(f"{BUNDLE} is up to date")
            return BUNDLE
        STAMP.unlink(missing_ok=True)
        if BUNDLE.exists():
            shutil.rmtree(BUNDLE)
        started = time.monotonic()
        inputs = fingerprint(webengine=webengine)  # before: a change meanwhile means stale
        say("running PyInstaller (one to two minutes)...")
        cmd = [sys.executable, "-m", "PyInstaller", *pyinstaller_args(webengine=webengine)]
        subprocess.run(cmd, check=True, cwd=ROOT)  # noqa: S603 - our own argument list
        check_bundle()
        STAMP.write_text(json.dumps(inputs, indent=1) + "\n")
        say(f"built in {time.monotonic() - started:.0f} s, {dir_size(BUNDLE) / 2**20:.0f} MiB")
    return BUNDLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--no-webengine",
        dest="webengine",
        action="store_false",
        help="leave QtWebEngine out (about 290 MB less; the chat window cannot open)",
    )
    args = parser.parse_args(argv)
    bundle = build(force=args.force, webengine=args.webengine)
    say(f"the bundle is {bundle}; run {executable(bundle)}")
    sys.stdout.write(f"{bundle}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
