"""Start at login: an XDG autostart entry (Linux), a LaunchAgent (macOS), the HKCU Run key
(Windows). No Qt here, so the CLI and tests can use it too."""

from __future__ import annotations

import importlib
import os
import plistlib
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moltis_desktop.core.atomic import atomic_write_text

APP_ID = "moltis-desktop"
_RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def launch_command() -> list[str]:
    """How to start the app again: this interpreter running the launcher."""
    return [sys.executable, "-m", "moltis_desktop.desktop.launcher"]


class Autostart:
    """Whether the app starts at login, for the platform it runs on."""

    def __init__(
        self,
        *,
        platform: str = sys.platform,
        env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.platform = platform
        self.env = os.environ if env is None else env
        self.command = command or launch_command()

    @property
    def path(self) -> Path:
        """The file this platform reads at login (Linux, macOS)."""
        home = Path(self.env.get("HOME") or Path.home())
        if self.platform == "darwin":
            return home / "Library" / "LaunchAgents" / "org.moltis.desktop.plist"
        config = Path(self.env.get("XDG_CONFIG_HOME") or home / ".config")
        return config / "autostart" / f"{APP_ID}.desktop"

    def enabled(self) -> bool:
        if self.platform == "win32":  # pragma: no cover - Windows only
            winreg: Any = importlib.import_module("winreg")

            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY) as key:
                    winreg.QueryValueEx(key, "Moltis")
                return True
            except OSError:
                return False
        return self.path.exists()

    def enable(self) -> None:
        if self.platform == "win32":  # pragma: no cover - Windows only
            import subprocess

            winreg: Any = importlib.import_module("winreg")

            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY, 0, winreg.KEY_SET_VALUE) as k:
                winreg.SetValueEx(
                    k, "Moltis", 0, winreg.REG_SZ, subprocess.list2cmdline(self.command)
                )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.platform == "darwin":
            plist = {
                "Label": "org.moltis.desktop",
                "ProgramArguments": self.command,
                "RunAtLoad": True,
                "ProcessType": "Interactive",
            }
            atomic_write_text(self.path, plistlib.dumps(plist).decode("utf-8"))
            return
        atomic_write_text(
            self.path,
            "[Desktop Entry]\n"
            "Type=Application\n"
            "Name=Moltis\n"
            "Comment=Personal AI gateway\n"
            f"Exec={shlex.join(self.command)}\n"
            "Icon=moltis\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n",
        )

    def disable(self) -> None:
        if self.platform == "win32":  # pragma: no cover - Windows only
            winreg: Any = importlib.import_module("winreg")

            try:
                with winreg.OpenKey(
                    winreg.HKEY_CURRENT_USER, _RUN_KEY, 0, winreg.KEY_SET_VALUE
                ) as key:
                    winreg.DeleteValue(key, "Moltis")
            except OSError:
                pass
            return
        self.path.unlink(missing_ok=True)
