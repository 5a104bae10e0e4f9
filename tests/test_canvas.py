"""The canvas host: the workspace's canvas/ folder over HTTP, sandboxed, with live reload."""

from __future__ import annotations

import asyncio

import aiohttp

from moltis_desktop.gateway.canvas_host import PREFIX, canvas_dir
from tests.conftest import GatewayHandle, MakeClient


async def test_canvas_pages_are_served_sandboxed_with_live_reload(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession, make_client: MakeClient
) -> None:
    folder = canvas_dir(gateway.gateway.state)
    base = gateway.http + PREFIX
    # Nothing yet: a friendly empty page, not an error.
    async with http_session.get(base + "/") as resp:
        assert resp.status == 200
        assert "The canvas is empty" in await resp.text()
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(
        "<html><head><title>Chart</title></head><body><h1>Sales</h1></body></html>"
    )
    (folder / "data.json").write_text('{"x": 1}')
    async with http_session.get(base + "/") as resp:
        assert resp.status == 200
        csp = resp.headers["Content-Security-Policy"]
        assert csp.startswith("sandbox allow-scripts") and "allow-same-origin" not in csp
        page = await resp.text()
    assert "<h1>Sales</h1>" in page
    assert page.index(f'<script src="{PREFIX}/__live.js"></script>') < page.index("</body>")
    async with http_session.get(base + "/data.json") as resp:
        assert resp.content_type == "application/json" and await resp.json() == {"x": 1}
    for bad in ("/missing.html", "/../../config/moltis.toml", "/%2e%2e/%2e%2e/x"):
        async with http_session.get(base + bad) as resp:
            assert resp.status == 404, bad
    # A page from the canvas cannot use the gateway: its WebSocket says Origin: null.
    client = make_client(gateway.url)
    await client.open(headers={"Origin": "null"})
    res = await client.connect(token=gateway.token)
    assert res["ok"] is False
    # Live reload: a change under the folder sends "reload".
    async with http_session.ws_connect(base.replace("http", "ws", 1) + "/__live") as ws:
        await asyncio.sleep(0.5)
        (folder / "index.html").write_text("<html><body><h1>Sales v2</h1></body></html>")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "reload"
