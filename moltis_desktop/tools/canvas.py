"""The `canvas` tool: the agent shows pages in the canvas window and looks at them.

OpenClaw's agent drives a node's canvas (`canvas.present`, `canvas.hide`,
`canvas.navigate`, `canvas.eval`, `canvas.snapshot`). The desktop app provides the same
five commands in-process through the `Canvas` interface below, under the `CANVAS` key; the
tool is registered by the built-in plugin and offered only where a canvas exists (a
headless gateway has none).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import msgspec

from moltis_desktop.agent.tools import ToolContext, ToolError, tool
from moltis_desktop.core.keys import ServiceKey


class Canvas(Protocol):
    """What a canvas surface does (the desktop app's window; a node later)."""

    async def present(self, path: str) -> str:
        """Show `path` (relative to the workspace's canvas/ folder); returns its URL."""
        ...

    async def hide(self) -> None: ...

    async def navigate(self, url: str) -> str: ...

    async def eval(self, script: str) -> Any:
        """Run JavaScript in the page; returns its (JSON-able) result."""
        ...

    async def snapshot(self) -> bytes:
        """The page as it looks now, a PNG."""
        ...

    @property
    def folder(self) -> Path:
        """The canvas/ folder it serves."""
        ...


CANVAS: ServiceKey[Canvas] = ServiceKey("the desktop app's canvas")
KEEP_SNAPSHOTS = 20
"""Snapshots kept in canvas/snapshots/: saving one deletes all but the newest this many."""


def save_snapshot(folder: Path, png: bytes, keep: int = KEEP_SNAPSHOTS) -> Path:
    """Write `png` as `folder/snapshot-<ms>.png`, then delete the older snapshots beyond
    the newest `keep` (other files in the folder are left alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"snapshot-{int(time.time() * 1000)}.png"
    target.write_bytes(png)
    shots = sorted(folder.glob("snapshot-*.png"), key=_taken_ms, reverse=True)
    for old in shots[keep:]:
        old.unlink(missing_ok=True)
    return target


def _taken_ms(path: Path) -> int:
    stamp = path.stem.removeprefix("snapshot-")
    return int(stamp) if stamp.isdigit() else 0


@tool(timeout_s=30, requires=(CANVAS,))
async def canvas(
    ctx: ToolContext,
    action: Literal["present", "hide", "navigate", "eval", "snapshot"],
    path: Annotated[
        str, msgspec.Meta(description="present: a file in the workspace's canvas/ folder")
    ] = "index.html",
    url: Annotated[str, msgspec.Meta(description="navigate: an http(s) address")] = "",
    script: Annotated[str, msgspec.Meta(description="eval: JavaScript to run in the page")] = "",
) -> Any:
    """Show a page to the user in the canvas window and work with it. Write HTML files into
    the workspace's canvas/ folder, then `present` one (it reloads live when the file
    changes); `navigate` to an address; `eval` JavaScript in it; `snapshot` it as a PNG
    (saved in canvas/snapshots/, which keeps the newest 20); `hide` the window."""
    surface = ctx.service(CANVAS)
    if action == "present":
        await surface.present(path)
        # The file, not the URL: the URL holds a canvas capability, which stays out of the
        # transcript and the model's provider.
        return {"shown": path}
    if action == "hide":
        await surface.hide()
        return {"hidden": True}
    if action == "navigate":
        if not url.startswith(("http://", "https://")):
            raise ToolError("navigate needs an http:// or https:// address")
        return {"shown": await surface.navigate(url)}
    if action == "eval":
        if not script:
            raise ToolError("eval needs a script")
        return {"result": await surface.eval(script)}
    png = await surface.snapshot()
    target = await asyncio.to_thread(save_snapshot, surface.folder / "snapshots", png)
    return {"png": str(target), "bytes": len(png)}
