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

    if not has_display():
        print(
            "moltis-desktop: no display found (DISPLAY/WAYLAND_DISPLAY unset), so the tray "
            "app cannot start; running the gateway headless instead. Stop it with Ctrl+C.",
            file=sys.stderr,
        )
    else:
        print(
            "moltis-desktop: the tray app is not part of this version yet; running the "
            "gateway headless. Stop it with Ctrl+C.",
            file=sys.stderr,
        )
    return run_headless()
