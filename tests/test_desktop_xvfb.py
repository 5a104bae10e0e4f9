"""The real tray app on a real X server: Xvfb with a system tray (trayer), the app started
as users start it (`python -m moltis_desktop.desktop.launcher`), its tray icon right-clicked
with the pointer (xdotool, through XTEST) and the menu that opens photographed (ImageMagick's
`import -window root`).

The screenshots go to test-output/desktop/ (tray-xvfb.png, tray-menu-xvfb.png), next to the
offscreen ones of test_desktop.py. Needs the Debian packages scripts/install.sh installs;
when one is missing the test fails and says which (it is never skipped).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from filelock import FileLock

from tests.support.browser import OUTPUT, _write_gallery
from tests.support.process import free_port

pytestmark = pytest.mark.xdist_group("qt")

T = TypeVar("T")
TOKEN = "desktop-xvfb-token-123"
SCREEN = (1280, 800)
PACKAGES = (
    "xvfb xauth trayer xdotool imagemagick libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 "
    "libxkbcommon-x11-0"
)
INSTALL = f"run `make install` (as root), or `sudo apt-get install -y {PACKAGES}`"
TOOLS = {"Xvfb": "xvfb", "trayer": "trayer", "xdotool": "xdotool", "import": "imagemagick"}
CONFIG = """
[agents]
model = "local/model-1"

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "LOCAL_LLM_KEY"
max_retries = 0
"""
TRAY_CHECK = (
    "import sys\n"
    "from PySide6.QtWidgets import QApplication, QSystemTrayIcon\n"
    "app = QApplication(sys.argv[:1])\n"
    "print(QSystemTrayIcon.isSystemTrayAvailable())\n"
)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll `probe` until it returns something (not None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Geometry:
    x: int
    y: int
    width: int
    height: int


@dataclass
class XServer:
    display: str
    env: dict[str, str]
    """This process's environment for clients of the X server: DISPLAY set, no D-Bus session
    (Qt then uses the XEmbed tray, which trayer hosts), no Qt platform override."""

    def run(self, *cmd: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def windows(self, klass: str) -> dict[int, Geometry]:
        """The windows whose WM_CLASS matches `klass`, with their position on the screen."""
        found = self.run("xdotool", "search", "--class", klass)
        out = {}
        for wid in found.stdout.split():
            geo = self.run("xdotool", "getwindowgeometry", "--shell", wid)
            if geo.returncode != 0:
                continue  # gone meanwhile
            values = dict(line.split("=", 1) for line in geo.stdout.split() if "=" in line)
            out[int(wid)] = Geometry(
                int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])
            )
        return out

    def screenshot(self, path: Path) -> Path:
        done = self.run("import", "-window", "root", str(path), timeout=30)
        assert done.returncode == 0 and path.exists(), f"screenshot failed: {done.stderr}"
        return path


def missing_tools() -> list[str]:
    return [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class XStartError(Exception):
    """Xvfb or trayer did not come up (worth another try)."""


def start_xvfb(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a display number it picks itself (-displayfd: no clash with other servers)."""
    size = f"{SCREEN[0]}x{SCREEN[1]}x24"
    read_fd, write_fd = os.pipe()
    try:
        with log.open("wb") as out:
            xvfb = subprocess.Popen(
                ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", size, "-nolisten", "tcp"],
                pass_fds=(write_fd,),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        os.close(write_fd)
        number = b""
        deadline = time.monotonic() + 15
        while not number.endswith(b"\n"):
            if xvfb.poll() is not None or time.monotonic() > deadline:
                stop(xvfb)
                raise XStartError(f"Xvfb did not start: {log.read_text(errors='replace')}")
            if select.select([read_fd], [], [], 0.2)[0]:
                chunk = os.read(read_fd, 16)
                if not chunk:
                    stop(xvfb)
                    raise XStartError(f"Xvfb did not start: {log.read_text(errors='replace')}")
                number += chunk
    finally:
        os.close(read_fd)
    return xvfb, f":{int(number)}"


def start_trayer(server: XServer, log: Path) -> subprocess.Popen[bytes]:
    """trayer, the system tray (XEmbed), as a 200 x 30 panel at the top left; once its panel
    is up."""
    with log.open("wb") as out:
        trayer = subprocess.Popen(
            [
                "trayer",
                *("--edge", "top", "--align", "left", "--widthtype", "pixel"),
                *("--width", "200", "--height", "30", "--SetDockType", "false"),
            ],
            env=server.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while not any(g.width == 200 for g in server.windows("trayer").values()):
        if trayer.poll() is not None or time.monotonic() > deadline:
            stop(trayer)
            raise XStartError(f"trayer's panel did not appear: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    return trayer


@pytest.fixture
def xserver(tmp_path: Path) -> Iterator[XServer]:
    """Xvfb with trayer as its system tray; both stopped afterwards. Tried three times: a
    display number freed by another X server that is still shutting down can be taken while
    that server removes its socket, and then nobody can connect to the new one."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"the Xvfb tray test needs {', '.join(missing)}: {INSTALL}")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "WAYLAND_"))}
    base.pop("DBUS_SESSION_BUS_ADDRESS", None)
    errors = []
    for attempt in range(3):
        xvfb, trayer = None, None
        try:
            xvfb, display = start_xvfb(tmp_path / f"xvfb-{attempt}.log")
            server = XServer(display, {**base, "DISPLAY": display})
            trayer = start_trayer(server, tmp_path / f"trayer-{attempt}.log")
        except XStartError as exc:
            errors.append(str(exc))
            if xvfb is not None:
                stop(xvfb)
            continue
        try:
            yield server
        finally:
            stop(trayer)
            stop(xvfb)
        return
    pytest.fail("no X server with a system tray after 3 tries:\n" + "\n".join(errors))


def tray_available(server: XServer) -> bool:
    """QSystemTrayIcon.isSystemTrayAvailable() in a fresh process on this display (asked up to
    three times, a second apart: trayer may still be claiming the tray selection)."""
    for _ in range(3):
        if tray_check(server):
            return True
        time.sleep(1)
    return False


def tray_check(server: XServer) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", TRAY_CHECK],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        hint = ""
        if "xcb" in done.stderr:
            hint = f"\nQt's xcb platform plugin did not load (libraries missing?): {INSTALL}"
        pytest.fail(f"the Qt tray check failed on {server.display}:{hint}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1] == "True"


def log_messages(log: Path) -> list[str]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            out.append(str(json.loads(line).get("message", "")))
    return out


def differing_pixels(a: Path, b: Path) -> int:
    """How many pixels differ between two images (ImageMagick's `compare -metric AE`)."""
    done = subprocess.run(
        ["compare", "-metric", "AE", str(a), str(b), "null:"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode in (0, 1), f"compare failed: {done.stderr}"
    return int(float(done.stderr.split()[0]))


def colours(image: Path, g: Geometry) -> int:
    """How many distinct colours the image has inside `g`."""
    done = subprocess.run(
        [
            "convert",
            str(image),
            "-crop",
            f"{g.width}x{g.height}+{g.x}+{g.y}",
            "-format",
            "%k",
            "info:",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"convert failed: {done.stderr}"
    return int(done.stdout.strip())


def test_tray_icon_and_menu_on_xvfb(xserver: XServer, tmp_path: Path) -> None:
    assert tray_available(xserver), (
        f"QSystemTrayIcon.isSystemTrayAvailable() is False on {xserver.display} with trayer"
    )
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    # A provider is configured (never called), so the first-run dialog stays closed.
    (home / "config" / "moltis.toml").write_text(CONFIG, encoding="utf-8")
    # The global shortcut that opens the chat (set in Settings; kept in desktop.ini).
    (home / "state").mkdir(parents=True)
    (home / "state" / "desktop.ini").write_text(
        "[shortcuts]\nopen_chat=Ctrl+Alt+M\n", encoding="utf-8"
    )
    env = {k: v for k, v in xserver.env.items() if not k.startswith(("MOLTIS_", "XDG_"))}
    env.update(
        MOLTIS_HOME=str(home),
        HOME=str(home),
        MOLTIS_TOKEN=TOKEN,
        MOLTIS_PORT=str(free_port()),
        LOCAL_LLM_KEY="unused",
        QTWEBENGINE_DISABLE_SANDBOX="1",
    )
    out_path = tmp_path / "app.out"
    with out_path.open("wb") as out:
        app = subprocess.Popen(
            [sys.executable, "-m", "moltis_desktop.desktop.launcher"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    log = home / "logs" / "moltis.log"

    def output() -> str:
        return out_path.read_text(encoding="utf-8", errors="replace")

    try:

        def ready() -> bool | None:
            assert app.poll() is None, f"the app exited with {app.returncode}:\n{output()}"
            return True if any(m.startswith("tray app ready") for m in log_messages(log)) else None

        wait_for("'tray app ready' in the log", ready, timeout=60)

        # The icon is embedded in trayer's panel (top left, 200 x 30).
        def icon() -> Geometry | None:
            for g in xserver.windows("Moltis Desktop").values():
                if 8 <= g.width <= 64 and 8 <= g.height <= 64 and g.x < 200 and g.y < 30:
                    return g
            return None

        g = wait_for("the tray icon in trayer's panel", icon)
        time.sleep(0.5)  # painted
        folder = OUTPUT / "desktop"
        folder.mkdir(parents=True, exist_ok=True)
        before = xserver.screenshot(folder / "tray-xvfb.png")
        assert colours(before, g) > 3, "the tray icon is not drawn in the screenshot"

        # Right-click the icon: the real menu opens next to it.
        known = set(xserver.windows("Moltis Desktop"))
        cx, cy = g.x + g.width // 2, g.y + g.height // 2
        clicked = xserver.run("xdotool", "mousemove", str(cx), str(cy), "click", "3")
        assert clicked.returncode == 0, clicked.stderr

        def menu() -> Geometry | None:
            for wid, m in xserver.windows("Moltis Desktop").items():
                near = m.x <= cx + 64 and m.y <= cy + 64  # opens at the pointer
                if wid not in known and near and m.width > 100 and m.height > 100:
                    return m
            return None

        m = wait_for("the tray menu's window", menu)
        time.sleep(0.5)  # painted
        after = xserver.screenshot(folder / "tray-menu-xvfb.png")
        changed = differing_pixels(before, after)
        # The menu's own area, not just the pointer or a hover, has changed.
        assert changed > m.width * m.height // 4, (
            f"only {changed} pixels changed after opening the menu ({m})"
        )
        assert colours(after, m) > 10, "the menu's area is blank"
        with FileLock(str(folder / ".gallery.lock")):
            _write_gallery(folder)
        xserver.run("xdotool", "key", "Escape")
        assert app.poll() is None, output()
        assert "global shortcut Ctrl+Alt+M opens the chat" in log_messages(log)
        # The global shortcut, pressed with no app window focused, opens the chat.
        xserver.run("xdotool", "key", "ctrl+alt+m")

        def chat_opened() -> bool | None:
            return True if "chat window opened" in log_messages(log) else None

        wait_for("the chat window to open from the shortcut", chat_opened, timeout=20)
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGTERM)  # as logout does; quits as the menu's Quit does
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait(10)
    assert app.returncode == 0, f"exit code {app.returncode}:\n{output()}"
    assert "gateway stopped" in log_messages(log)
