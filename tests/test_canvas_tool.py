"""The agent's `canvas` tool, through the real agent loop (the fake LLM calls it) on a
surface of its own: snapshots are pruned, and `present` keeps URLs out of the transcript."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from moltis_desktop.gateway.canvas_host import canvas_dir
from moltis_desktop.tools.canvas import CANVAS, KEEP_SNAPSHOTS
from tests.conftest import MakeClient, StartGateway
from tests.support.fake_llm import FakeLLM, Turn, agent_config

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class FakeSurface:
    """A canvas surface outside the gateway (what the desktop app's window is), for the
    canvas tool to drive: it only makes PNGs."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self.snapshots = 0

    @property
    def folder(self) -> Path:
        return self._folder

    async def present(self, path: str) -> str:
        return f"http://canvas.test/{path}"

    async def hide(self) -> None:
        return None

    async def navigate(self, url: str) -> str:
        return url

    async def eval(self, script: str) -> Any:
        return None

    async def snapshot(self) -> bytes:
        self.snapshots += 1
        return PNG


async def test_the_canvas_tool_keeps_only_the_newest_snapshots(
    start_gateway: StartGateway, fake: FakeLLM, make_client: MakeClient
) -> None:
    handle = await start_gateway(
        agent_config("openai", fake), env={"FAKE_LLM_KEY": "fake-key-0123456789"}
    )
    folder = canvas_dir(handle.gateway.state)
    shots = folder / "snapshots"
    shots.mkdir(parents=True)
    now_ms = int(time.time() * 1000)
    old = [shots / f"snapshot-{now_ms - 1000 * (i + 1)}.png" for i in range(KEEP_SNAPSHOTS + 10)]
    for path in old:
        path.write_bytes(PNG)
    (shots / "notes.txt").write_text("not a snapshot")
    surface = FakeSurface(folder)
    handle.gateway.state.services[CANVAS] = surface
    fake.script(
        Turn(tool_calls=[("canvas", {"action": "snapshot"})]),
        Turn(tool_calls=[("canvas", {"action": "present", "path": "index.html"})]),
        Turn(text="Done."),
    )
    client = make_client(handle.url)
    assert (await client.connect(token=handle.token, scopes=["operator.write"]))["ok"]
    rid = await client.send_request("agent", {"message": "snap it", "idempotencyKey": "snap-1"})
    assert (await client.response(rid))["payload"]["status"] == "accepted"
    assert (await client.response(rid))["payload"]["status"] == "ok"
    assert surface.snapshots == 1
    kept = sorted(p.name for p in shots.glob("snapshot-*.png"))
    new = [p for p in kept if p not in {o.name for o in old}]
    assert len(kept) == KEEP_SNAPSHOTS and len(new) == 1
    # The newest: the new one and the 19 most recent old ones.
    assert set(kept) == {new[0], *(o.name for o in old[: KEEP_SNAPSHOTS - 1])}
    assert (shots / "notes.txt").exists()
    # `present` tells the model the file, not a URL (a URL would hold a capability).
    bodies = [r.body for r in fake.requests if r.method == "POST"]
    tool_results = [m for m in bodies[-1]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_results[-1]["content"]) == {"shown": "index.html"}
