"""`moltis-desktop`: the tray app where there is a display, the headless gateway elsewhere.

Deliberately imports no Qt at module level: deciding to run headless must not load it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def has_display(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> bool:
    """Whether a graphical session is available to show windows and a tray icon."""
    env = os.environ if env is None else env
    if platform.startswith("linux") or "bsd" in platform:
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


def main() -> int:
    """Entry point of the `moltis-desktop` console script."""
    from moltis_desktop.runtime import run_headless

    env = os.environ
    if env.get("MOLTIS_HEADLESS") == "1":
        return run_headless()
    if not has_display() and not env.get("QT_QPA_PLATFORM"):
        print(
            "moltis-desktop: no display found (DISPLAY/WAYLAND_DISPLAY unset), so the tray "
            "app cannot start; running the gateway headless instead. Stop it with Ctrl+C.",
            file=sys.stderr,
        )
        return run_headless()
    try:
        import PySide6  # noqa: F401
        import qasync  # noqa: F401
    except ImportError:
        print(
            "moltis-desktop: the tray app needs Qt, which is not installed: run "
            "`pip install 'moltis-desktop[desktop]'` (or `make install`). Running the gateway "
            "headless meanwhile. Stop it with Ctrl+C.",
            file=sys.stderr,
        )
        return run_headless()
    from moltis_desktop.desktop.app import run_desktop

    return run_desktop()


if __name__ == "__main__":
    sys.exit(main())
