"""Separate processes: the gateway (`moltis gateway`), as users and outside clients see it,
and short Python scripts that must start from a clean interpreter."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def run_python(code: str, *args: str, timeout: float = 60.0) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet); its stdout, stripped.
    Fails the test, with the script's stderr, when it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    port: int,
    timeout: float = 15.0,
    proc: subprocess.Popen[str] | None = None,
    *,
    tls: bool = False,
) -> None:
    """Wait until `/readyz` answers 200 (over https, unverified, when `tls`)."""
    deadline = time.monotonic() + timeout
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/readyz"
    context = ssl._create_unverified_context() if tls else None  # self-signed; tests pin it
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"gateway on port {port} not ready after {timeout} s")


def stop_process(proc: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    port: int
    home: Path
    env: dict[str, str]
    token: str | None
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def output(self) -> str:
        return (self.home / "gateway.out").read_text(errors="replace")


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTIS_")}
    # mDNS stays off unless a test asks for it (MOLTIS_DISABLE_MDNS="0").
    env.update({"MOLTIS_HOME": str(home), "PYTHONUNBUFFERED": "1", "MOLTIS_DISABLE_MDNS": "1"})
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)  # the Qt tests set it in-process; it means "a display"
    env.update(extra)
    return env


@contextmanager
def gateway_process(
    home: Path,
    *,
    token: str | None = "proc-token-0123456789",
    args: tuple[str, ...] = (),
    command: tuple[str, ...] | None = None,
    **env_extra: str,
) -> Iterator[GatewayProcess]:
    """Run `moltis gateway` on a free port until the block ends (then SIGTERM)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    extra = dict(env_extra)
    if token is not None:
        extra["MOLTIS_TOKEN"] = token
    env = base_env(home, **extra)
    cmd = list(command) if command else [str(BIN / "moltis"), "gateway", "--port", str(port)]
    if command:
        env["MOLTIS_PORT"] = str(port)
    out = (home / "gateway.out").open("w")
    proc = subprocess.Popen([*cmd, *args], env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    out.close()
    tls = env.get("MOLTIS_GATEWAY__TLS__ENABLED", "").lower() in ("1", "true")
    handle = GatewayProcess(proc, port, home, env, token, tls)
    try:
        wait_ready(port, proc=proc, tls=tls)
        yield handle
    finally:
        stop_process(proc)
