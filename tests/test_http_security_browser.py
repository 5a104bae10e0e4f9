"""The browser attacks of the security review, done by a browser: headless Chromium opens
a page on another origin (`evil.example`, mapped to 127.0.0.1) that tries to make the
gateway run a turn, and a DNS-rebinding page that tries to read the answer."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import StartGateway
from tests.support.browser import Chromium
from tests.support.fake_llm import FakeLLM, Turn, agent_config

pytestmark = pytest.mark.xdist_group("browser")

ATTACK = """<!doctype html><meta charset=utf-8><title>cute cats</title>
<form id=f method=POST enctype=text/plain action="{target}">
<input name='{{"model":"moltis:main","messages":[{{"role":"user","content":"x' value='"}}]}}'>
</form>
<script>
window.results = {{}};
fetch("{target}", {{method: "POST", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{model: "moltis:main", messages: [{{role: "user", content: "pwn"}}]}})}})
  .then(r => window.results.fetch = r.type, e => window.results.fetch = "error:" + e);
fetch("{target}", {{method: "POST",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{model: "moltis:main", messages: [{{role: "user", content: "pwn"}}]}})}})
  .then(r => r.text().then(t => window.results.cors = r.status + ":" + t),
        e => window.results.cors = "blocked");
</script>
"""


async def test_a_page_on_another_origin_cannot_run_a_turn(
    start_gateway: StartGateway, fake: FakeLLM
) -> None:
    handle = await start_gateway(
        '[gateway.auth]\nmode = "none"\n' + agent_config("openai", fake),
        token=None,
        env={"FAKE_LLM_KEY": "fake-key-0123456789"},
        overrides={"gateway": {"chat_completions": True}},
    )
    fake.script(Turn(text="should never be produced"))
    gw_port = handle.gateway.state.port
    target = f"http://127.0.0.1:{gw_port}/v1/chat/completions"

    pages: dict[str, str] = {"attack": ATTACK.format(target=target)}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=pages["attack"], content_type="text/html")

    app = web.Application()
    app.router.add_get("/attack", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    evil_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
    try:
        async with Chromium(extra_args=[rules]) as chromium:
            page = await chromium.page()
            # 1. The CSRF: fetches from the page, then the form post (a navigation).
            await page.goto(f"http://evil.example:{evil_port}/attack")
            await page.wait_for_function(
                "() => window.results.fetch && window.results.cors", timeout=15_000
            )
            results = await page.evaluate("() => window.results")
            assert results["cors"] == "blocked"  # the reply is not readable either
            async with page.expect_navigation() as navigation:
                await page.evaluate("() => document.getElementById('f').submit()")
            response = await navigation.value
            assert response is not None and response.status == 403
            assert "origin_not_allowed" in await response.text()
            # 2. DNS rebinding: evil.example now resolves to the gateway's address.
            rebound = await page.goto(f"http://evil.example:{gw_port}/")
            assert rebound is not None and rebound.status == 421
            status = await page.evaluate(
                """async (url) => {
                    const r = await fetch(url, {method: "POST",
                      headers: {"Content-Type": "application/json",
                                "x-moltis-session-key": "agent:main:main"},
                      body: JSON.stringify({model: "moltis:main",
                        messages: [{role: "user", content: "read me"}]})});
                    return r.status; }""",
                f"http://evil.example:{gw_port}/v1/chat/completions",
            )
            assert status == 421
            await asyncio.sleep(0.3)
    finally:
        await runner.cleanup()
    # Not one turn reached the model.
    assert fake.requests == []
