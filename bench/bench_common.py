"""What the benchmark scripts share: a free loopback port and the machine's description."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, kernel and date: recorded with every result."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.date.today().isoformat(),
    }


def save_results(prefix: str, results: Any) -> Path:
    """Write `results` to bench/results/<prefix><timestamp>.json and say where."""
    import json

    root = Path(__file__).resolve().parent.parent
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = root / "bench" / "results" / f"{prefix}{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nfull results: {out.relative_to(root)}")
    return out


def lookup(data: dict[str, Any], path: str) -> Any:
    """`data` at a dotted path, or None where it is missing."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def verdict(value: Any, op: str, target: float | None) -> str:
    """ "ok" / "MISSED" against a target ("" when there is none, "n/a" with no figure)."""
    if target is None:
        return ""
    if not isinstance(value, int | float):
        return "n/a"
    ok = {"<=": value <= target, ">=": value >= target, "<": value < target}[op]
    return "ok" if ok else "MISSED"
