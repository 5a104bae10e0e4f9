"""Tray app benchmark: launch time, idle memory, memory with the chat window open.

Starts the real app as users do (`python -m moltis_desktop.desktop.launcher`) on Qt's
offscreen platform (QT_QPA_PLATFORM=offscreen, no DISPLAY), each run with a fresh
MOLTIS_HOME, a free MOLTIS_PORT and a provider configured (never called: its address is a
closed port), so the first-run dialog stays closed as it does for everyone after set-up.

  launch    process start (just before fork/exec, wall clock) until the tray icon is shown
            and the gateway listens: the "tray app ready" line's timestamp in
            <MOLTIS_HOME>/logs/moltis.log (ms resolution). /readyz is polled every 10 ms
            meanwhile; its first 200 is recorded too, and `launch` is the later of the two.
  idle      after --idle s (3) with the chat window never opened: RSS of the process and its
            children (psutil), PSS and USS too, and whether QtWebEngine is mapped
            (libQt6WebEngineCore in /proc/<pid>/maps: it must not be).
  chat      on the last run: a second launch of the launcher sends "show" over the
            single-instance socket and exits; the first opens the chat window (QtWebEngine).
            `open` is the second launch's start until the web app's WebSocket is connected
            (a `webchat` entry in `system-presence`, asked by a client of ours); then, after
            --settle s (5) more, RSS/PSS/USS of the process and its QtWebEngineProcess
            children.

    .venv/bin/python bench/bench_desktop.py [--runs 5] [--idle 3] [--settle 5]
    make bench-desktop

Prints a table and writes bench/results/desktop-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from bench_agent import TOKEN, Client
from bench_common import free_port, lookup, machine, save_results, verdict

ROOT = Path(__file__).resolve().parent.parent

LAUNCHER = [sys.executable, "-m", "moltis_desktop.desktop.launcher"]
CONFIG = """
[agents]
model = "local/model-1"

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "LOCAL_LLM_KEY"
max_retries = 0
"""
READY = "tray app ready"
WEBENGINE = "libQt6WebEngineCore"
MIB = 1024 * 1024
TARGETS = {
    "launch to tray + gateway ready, median (s)": ("launch.launch_s.median", "<=", 1.5),
    "launch to tray + gateway ready, p90 (s)": ("launch.launch_s.p90", "<=", 1.5),
    "idle RSS, chat never opened (MiB)": ("idle.rss_mib.median", "<=", 150),
    "QtWebEngine mapped while idle (runs)": ("idle.webengine_loaded_runs", "<=", 0),
    "chat window: open to web app connected (s)": ("chat.open_s", "", None),
    "chat window open: RSS incl. children (MiB)": ("chat.rss_mib", "", None),
    "chat window open: PSS incl. children (MiB)": ("chat.pss_mib", "", None),
}


def summary(values: list[float], digits: int = 3) -> dict[str, float]:
    """n, median, p90 (nearest rank), min, max."""
    ordered = sorted(values)
    p90 = ordered[max(0, math.ceil(len(ordered) * 0.9) - 1)]
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), digits),
        "p90": round(p90, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }


# ------------------------------------------------------------------------------ the app


class App:
    """One tray app process with its own MOLTIS_HOME."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="moltis-bench-desktop-"))
        (self.home / "config").mkdir()
        (self.home / "config" / "moltis.toml").write_text(CONFIG, encoding="utf-8")
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MOLTIS_", "QT_", "XDG_"))
            and k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
        }
        env.update(
            MOLTIS_HOME=str(self.home),
            HOME=str(self.home),
            MOLTIS_TOKEN=TOKEN,
            MOLTIS_PORT=str(self.port),
            LOCAL_LLM_KEY="unused",
            QT_QPA_PLATFORM="offscreen",
            QTWEBENGINE_DISABLE_SANDBOX="1",
        )
        self.env = env
        self.log = self.home / "logs" / "moltis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, float]:
        """Launch; wait for the ready line and /readyz. Seconds from the launch to each."""
        with (self.home / "app.out").open("wb") as out:
            started_wall = time.time()
            started = time.perf_counter()
            self.proc = subprocess.Popen(LAUNCHER, env=self.env, stdout=out, stderr=out)
        readyz_s: float | None = None
        ready_wall: float | None = None
        deadline = started + 60
        while readyz_s is None or ready_wall is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}: {self.output()}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the app was not ready after 60 s: {self.output()}")
            if readyz_s is None and self._readyz():
                readyz_s = time.perf_counter() - started
            if ready_wall is None:
                ready_wall = self._ready_line()
            time.sleep(0.01)
        tray_s = ready_wall - started_wall
        return {
            "tray_ready_s": round(tray_s, 3),
            "readyz_s": round(readyz_s, 3),
            "launch_s": round(max(tray_s, readyz_s), 3),
        }

    def _readyz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _ready_line(self) -> float | None:
        """The wall-clock time of the "tray app ready" record, once it is written."""
        if not self.log.exists():
            return None
        for line in self.log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if str(record.get("message", "")).startswith(READY):
                    stamp = str(record["time"]).replace("Z", "+00:00")
                    return datetime.datetime.fromisoformat(stamp).timestamp()
        return None

    def output(self) -> str:
        return (self.home / "app.out").read_text(encoding="utf-8", errors="replace")[-3000:]

    def memory(self) -> dict[str, Any]:
        """RSS, PSS and USS of the app and all its children, in MiB."""
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        procs = [main, *main.children(recursive=True)]
        rss = pss = uss = 0
        names = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                full = proc.memory_full_info()
                rss, pss, uss = rss + full.rss, pss + full.pss, uss + full.uss
                names.append(proc.name())
        return {
            "rss_mib": round(rss / MIB, 1),
            "pss_mib": round(pss / MIB, 1),
            "uss_mib": round(uss / MIB, 1),
            "main_rss_mib": round(main.memory_info().rss / MIB, 1),
            "processes": names,
            "webengine_loaded": self.webengine_loaded(),
        }

    def webengine_loaded(self) -> bool:
        assert self.proc is not None
        maps = Path(f"/proc/{self.proc.pid}/maps").read_text(encoding="utf-8", errors="replace")
        return WEBENGINE in maps

    def show(self) -> float:
        """Launch the launcher again: it hands "show" to this app and exits. Its duration."""
        started = time.perf_counter()
        second = subprocess.run(
            LAUNCHER, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if second.returncode != 0 or "already running" not in second.stdout:
            raise RuntimeError(f"the second launch did not hand over: {second}")
        return time.perf_counter() - started

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        shutil.rmtree(self.home, ignore_errors=True)
        return code


async def webchat_connected(port: int) -> None:
    """Until the chat window's web app is connected (its `webchat` presence entry)."""
    async with aiohttp.ClientSession() as http:
        client = Client(http, f"ws://127.0.0.1:{port}")
        await client.connect()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                entries = await client.call("system-presence", {})
                if any(e.get("mode") == "webchat" for e in entries):
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError("the chat window's web app did not connect")
        finally:
            await client.close()


# ------------------------------------------------------------------------------ phases


def measure(runs: int, idle_s: float, settle_s: float) -> dict[str, Any]:
    launches: list[dict[str, float]] = []
    idles: list[dict[str, Any]] = []
    chat: dict[str, Any] = {}
    exit_codes: list[int | None] = []
    for i in range(runs):
        app = App()
        try:
            launch = app.start()
            launches.append(launch)
            time.sleep(idle_s)
            idle = app.memory()
            idles.append(idle)
            line = (
                f"run {i + 1}/{runs}: launch {launch['launch_s']:.3f} s (tray "
                f"{launch['tray_ready_s']:.3f}, /readyz {launch['readyz_s']:.3f}), idle RSS "
                f"{idle['rss_mib']} MiB, WebEngine {'LOADED' if idle['webengine_loaded'] else 'no'}"
            )
            if i == runs - 1:
                started = time.perf_counter()
                second_s = app.show()
                asyncio.run(webchat_connected(app.port))
                open_s = time.perf_counter() - started
                samples = []
                end = time.perf_counter() + settle_s
                while time.perf_counter() < end:
                    time.sleep(0.5)
                    samples.append(app.memory()["rss_mib"])
                chat = {
                    "second_launch_s": round(second_s, 3),
                    "open_s": round(open_s, 3),
                    **app.memory(),
                    "peak_rss_mib": max(samples),
                }
                line += (
                    f"; chat window: open {open_s:.2f} s, RSS {chat['rss_mib']} MiB "
                    f"(PSS {chat['pss_mib']}) in {len(chat['processes'])} processes"
                )
            print(line, file=sys.stderr)
        finally:
            exit_codes.append(app.stop())
    return {
        "launch": {
            key: summary([r[key] for r in launches])
            for key in ("launch_s", "tray_ready_s", "readyz_s")
        }
        | {"runs": launches},
        "idle": {
            key: summary([r[key] for r in idles], 1)
            for key in ("rss_mib", "pss_mib", "uss_mib", "main_rss_mib")
        }
        | {
            "webengine_loaded_runs": sum(1 for r in idles if r["webengine_loaded"]),
            "after_s": idle_s,
            "runs": idles,
        },
        "chat": chat | {"after_s": settle_s},
        "exit_codes": exit_codes,
    }


def qt_versions() -> dict[str, str]:
    import PySide6
    from PySide6 import QtCore

    return {"pyside6": PySide6.__version__, "qt": QtCore.qVersion()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="launches (default 5)")
    parser.add_argument("--idle", type=float, default=3.0, help="idle time before RSS (s)")
    parser.add_argument("--settle", type=float, default=5.0, help="chat window settle (s)")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": machine() | qt_versions(),
        "runs": args.runs,
        **measure(args.runs, args.idle, args.settle),
    }
    print(f"\nMachine: {results['machine']}")
    print(f"{'measure':46} {'target':>8} {'value':>10}  verdict")
    for name, (path, op, target) in TARGETS.items():
        value = lookup(results, path)
        shown = op + str(target) if target is not None else ""
        print(f"{name:46} {shown:>8} {value!s:>10}  {verdict(value, op, target)}")
    print(f"exit codes after SIGTERM: {results['exit_codes']}")
    save_results("desktop-", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
