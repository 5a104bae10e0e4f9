"""The first-run message in the web app (Chromium): with nothing to answer, a chat gets one
notice on the assistant's side saying what to do, with real buttons; the download shows
its progress and then offers "Try again"; a reload shows the notice again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from tests.conftest import StartGateway
from tests.support.browser import Chromium, axe_violations, open_signed_in, shot
from tests.test_firstrun import FIRST_RUN_CONFIG, LOCAL_MODEL, closed_port, first_run_env

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    async with Chromium() as browser:
        yield browser


class SlowMirror:
    """A model mirror on loopback: any file is 2 MB of zeros, sent half now and half when
    the test says (so the page's progress can be seen in between)."""

    SIZE = 2_000_000

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mirror/"

    async def start(self) -> SlowMirror:
        app = web.Application()
        app.router.add_get("/mirror/{tail:.*}", self._file)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.match_info["tail"])
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(self.SIZE)}
        )
        await response.prepare(request)
        half = self.SIZE // 2
        await response.write(bytes(half))
        await self.release.wait()
        await response.write(bytes(self.SIZE - half))
        await response.write_eof()
        return response


async def send(page: Page, text: str) -> None:
    await page.fill("[data-testid=composer]", text)
    await page.keyboard.press("Enter")


@pytest.mark.parametrize("theme", ["light", "dark"])
async def test_first_run_notice_says_what_to_do(
    chromium: Chromium, start_gateway: StartGateway, theme: str
) -> None:
    mirror = await SlowMirror().start()
    try:
        gw = await start_gateway(
            FIRST_RUN_CONFIG, env=first_run_env(closed_port(), MOLTIS_MODEL_MIRROR=mirror.url)
        )
        page = await open_signed_in(chromium, gw.http, gw.token, color_scheme=theme)
        await send(page, "What is the capital of France?")
        notice = page.locator("[data-testid=setup-notice]")
        await expect(notice).to_be_visible(timeout=15_000)
        await expect(notice.locator("[data-testid=setup-message]")).to_contain_text(
            "No model is set up yet"
        )
        # Real buttons, named for what they do; no error banner, one notice.
        await expect(notice.get_by_role("button", name="Add an API key")).to_be_visible()
        await expect(
            notice.get_by_role("button", name="I started Ollama — try again")
        ).to_be_visible()
        await expect(page.locator("[data-testid=chat-error]")).to_have_count(0)
        await expect(notice).to_have_count(1)
        assert await axe_violations(page) == []
        await shot(page, f"firstrun-notice-desktop-{theme}")

        # Add an API key: a small form (the key goes to the secret store).
        await notice.get_by_role("button", name="Add an API key").click()
        panel = notice.locator("[data-testid=setup-key-panel]")
        await expect(panel).to_contain_text("moltis secrets set anthropic-api-key")
        await shot(page, f"firstrun-add-key-desktop-{theme}")
        await notice.get_by_role("button", name="Cancel").click()

        # "I started Ollama — try again" (nothing started): the message goes again, and it
        # fails the same way; still one notice, still no banner.
        await notice.get_by_role("button", name="I started Ollama — try again").click()
        await expect(page.locator("[data-testid=msg-user]")).to_have_count(2)
        await expect(page.locator("[data-testid=setup-notice]")).to_have_count(1)
        await expect(page.locator("[data-testid=chat-error]")).to_have_count(0)

        # A reload shows the notice again (moltis.chat.setup.get).
        await page.reload()
        await expect(page.locator("[data-testid=setup-notice]")).to_have_count(1, timeout=15_000)

        download = page.locator("[data-testid=setup-download]")
        await expect(download).to_contain_text("Download")
        await download.click()
        progress = page.locator("[data-testid=setup-progress]")
        await expect(progress).to_be_visible()
        await expect(progress).to_contain_text("Downloading")
        assert any(LOCAL_MODEL in r for r in mirror.requests), mirror.requests
        await shot(page, f"firstrun-downloading-desktop-{theme}")
        mirror.release.set()
        await expect(page.locator("[data-testid=setup-downloaded]")).to_contain_text(
            "is downloaded", timeout=15_000
        )
        await expect(page.get_by_role("button", name="Try again", exact=True)).to_be_visible()
        await shot(page, f"firstrun-downloaded-desktop-{theme}")
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        await mirror.close()
