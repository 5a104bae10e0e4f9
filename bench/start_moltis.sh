#!/usr/bin/env bash
# Start the Moltis gateway in the background for a benchmark and print its PID (the interface
# gwbench's `coldstart` expects). Environment: PORT (required), TOKEN (default benchtok),
# CPUS (optional core list for taskset), BENCH_HOME (state dir; default a fresh temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:?set PORT}
TOKEN=${TOKEN:-benchtok}
BENCH_HOME=${BENCH_HOME:-$(mktemp -d)}
cmd=(.venv/bin/moltis gateway --port "$PORT" --log-level warning)
[ -n "${CPUS:-}" ] && cmd=(taskset -c "$CPUS" "${cmd[@]}")
MOLTIS_HOME="$BENCH_HOME" MOLTIS_TOKEN="$TOKEN" "${cmd[@]}" </dev/null >"$BENCH_HOME/gateway.out" 2>&1 &
echo $!
