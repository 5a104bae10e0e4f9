"""The desktop app as a node of its own gateway, offscreen: an operator sees it in
`node.list` and drives its canvas window and its notifications with `node.invoke`."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

from PySide6.QtWidgets import QApplication

from moltis_desktop.desktop.app import prepare_qt
from moltis_desktop.desktop.node_bridge import display_name
from tests.support.browser import widget_shot
from tests.support.schema import FrameValidator
from tests.support.wsclient import ProtoClient
from tests.test_desktop import TOKEN, make_runtime, qt_run, running_app, until

prepare_qt()
pytestmark = pytest.mark.xdist_group("qt")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def invoke(op: ProtoClient, node_id: str, command: str, params: Any = None) -> Any:
    res = await op.request(
        "node.invoke",
        {
            "nodeId": node_id,
            "command": command,
            "params": params or {},
            "idempotencyKey": str(uuid.uuid4()),
            "timeoutMs": 30_000,
        },
    )
    assert res["ok"], res
    assert res["payload"]["ok"] is True and res["payload"]["command"] == command
    return res["payload"]["payload"]


def test_the_desktop_app_serves_canvas_and_notify_as_a_node(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def body() -> None:
        runtime = make_runtime(tmp_path / "home")
        async with running_app(qapp, runtime) as app:
            gw = app.gateway_state
            assert gw is not None and app.node is not None
            async with aiohttp.ClientSession() as http:
                op = ProtoClient(http, gw.url, FrameValidator())
                res = await op.connect(token=TOKEN, scopes=["operator.admin"])
                assert res["ok"], res

                nodes: list[dict[str, Any]] = []

                async def listed() -> bool:
                    nodes[:] = (await op.call("node.list", {}))["nodes"]
                    return any(n.get("connected") for n in nodes)

                await until(listed, 20)
                (entry,) = nodes
                assert entry["displayName"] == display_name()
                assert entry["paired"] and entry["approvalState"] == "approved"
                assert {"canvas.present", "canvas.hide", "canvas.navigate", "canvas.eval",
                        "canvas.snapshot", "system.notify"} <= set(entry["commands"])  # fmt: skip
                assert "system.run" not in entry["commands"]
                assert "system.run" not in app.node.client.commands.names()  # type: ignore[union-attr]
                node_id = entry["nodeId"]
                # Its state (identity, device token) is kept apart from the gateway's.
                assert (runtime.paths.state_dir / "desktop-node" / "identity.json").is_file()

                # system.notify: a tray notification, unless the user turned them off.
                shown = len(app.notifications)
                note = await invoke(op, node_id, "system.notify", {"title": "Build", "body": "ok"})
                assert note["ok"] is True and isinstance(note["delivered"], bool)
                assert len(app.notifications) == shown + 1
                assert app.notifications[-1].title == "Build"
                app.set_notify_replies(False)
                note = await invoke(op, node_id, "system.notify", {"title": "Quiet"})
                assert note == {"ok": True, "delivered": False}
                assert app.notifications[-1].title == "Build"
                app.set_notify_replies(True)

                # canvas.present opens the canvas window on the canvas home.
                assert await invoke(op, node_id, "canvas.present") == {"ok": True}
                canvas = app.canvas
                assert canvas is not None
                window = canvas.window()
                assert window.isVisible()
                # At a capability URL the app minted in-process.
                assert f"{gw.http_url}/__openclaw__/cap/" in window.url().toString()
                assert "/__openclaw__/canvas/" in window.url().toString()

                # canvas.eval runs in the page.
                assert await invoke(op, node_id, "canvas.eval", {"javaScript": "1+2"}) == {
                    "result": 3
                }

                # canvas.navigate: a page in the canvas folder (http only for URLs).
                folder = canvas.folder
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "report.html").write_text(
                    "<html><head><title>Node page</title></head>"
                    "<body style='background:#1e6f5c;color:#fff'><h1>From a node</h1></body></html>"
                )
                # The operator hands the node a page at its own capability URL (hello-ok's).
                page = op.hello["pluginSurfaceUrls"]["canvas"] + "/__openclaw__/canvas/report.html"
                assert await invoke(op, node_id, "canvas.navigate", {"url": page}) == {"ok": True}
                title = await invoke(op, node_id, "canvas.eval", {"javaScript": "document.title"})
                assert title == {"result": "Node page"}
                res = await op.request(
                    "node.invoke",
                    {"nodeId": node_id, "command": "canvas.navigate",
                     "params": {"url": "file:///etc/passwd"}, "idempotencyKey": "f1"},
                )  # fmt: skip
                assert not res["ok"] and res["error"]["details"]["code"] == "INVALID_REQUEST"

                # canvas.snapshot: a PNG (default) or a smaller JPEG.
                shot = await invoke(op, node_id, "canvas.snapshot", {})
                assert shot["format"] == "png"
                data = base64.b64decode(shot["base64"])
                assert data[:8] == PNG_MAGIC and len(data) > 2000
                small = await invoke(
                    op, node_id, "canvas.snapshot", {"format": "jpeg", "maxWidth": 200}
                )
                assert small["format"] == "jpeg"
                assert base64.b64decode(small["base64"])[:3] == b"\xff\xd8\xff"
                widget_shot(window, "canvas-node")

                # canvas.hide hides it; a snapshot of a hidden canvas is refused.
                assert await invoke(op, node_id, "canvas.hide") == {"ok": True}
                assert not window.isVisible()
                res = await op.request(
                    "node.invoke",
                    {"nodeId": node_id, "command": "canvas.snapshot", "idempotencyKey": "s1"},
                )
                assert not res["ok"] and res["error"]["details"]["code"] == "UNAVAILABLE"

                # What the node does not offer is refused by the gateway.
                res = await op.request(
                    "node.invoke",
                    {"nodeId": node_id, "command": "canvas.a2ui.reset", "idempotencyKey": "a1"},
                )
                assert not res["ok"]
                await op.close()
        assert app.node is None
        assert not gw.nodes.sessions

    qt_run(qapp, body())


def test_the_desktop_node_is_the_same_node_after_a_restart(
    qapp: QApplication, tmp_path: Path
) -> None:
    """Its identity is kept in the app's state folder: one node, not one per start. It is
    the app's own, so it never waits for approval (even when loopback devices must ask)."""
    home = tmp_path / "home"

    async def once() -> str:
        runtime = make_runtime(home, "[gateway]\nauto_approve_loopback_devices = false\n")
        async with running_app(qapp, runtime) as app:
            gw = app.gateway_state
            assert gw is not None and app.node is not None and app.node.client is not None
            client = app.node.client
            await asyncio.wait_for(client.connected.wait(), 20)
            assert client.node_id in gw.nodes.sessions
            assert not gw.pairing.pending and not gw.nodes.pending_surfaces
            assert app.state == "idle"
            return client.node_id

    first = qt_run(qapp, once())
    second = qt_run(qapp, once())
    assert first == second
