"""The one-time link `moltis dashboard` gets over the owner socket signs the web app in
(headless Chromium), on a gateway with no keyring and no passphrase."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from tests.conftest import StartGateway
from tests.support.browser import Chromium, wait_ready
from tests.support.process import BIN, base_env

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    async with Chromium() as browser:
        yield browser


async def test_dashboard_link_signs_the_web_app_in_once(
    chromium: Chromium, start_gateway: StartGateway
) -> None:
    no_keyring = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    handle = await start_gateway(token=None, env=no_keyring)
    assert handle.runtime.ephemeral_secret  # nothing on disk, nothing in a keyring
    env = base_env(handle.home, **no_keyring)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "moltis"),
        "dashboard",
        "--no-open",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    link = out.decode().strip()
    assert link.startswith(f"{handle.gateway.http_url}/#ticket="), link

    page = await chromium.page()
    await page.goto(link)
    await wait_ready(page)
    assert "ticket" not in page.url
    await expect(page.locator("[data-testid=chat-title]")).to_have_text("Main chat")
    # Spent: the same link again lands on the sign-in screen, which says so.
    again = await chromium.page()
    await again.goto(link)
    await expect(again.locator("[data-testid=signin-error]")).to_contain_text("expired")
