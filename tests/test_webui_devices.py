"""The web app's Devices page end to end: headless Chromium against a real gateway, with
real signed devices asking to pair over the protocol (no mocks of our own modules)."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image
from playwright.async_api import Page, expect

from moltis_desktop.pairing.setupcode import LINK_PREFIX, decode
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.browser import (
    CONTROLS,
    EVERY_LOOK,
    Chromium,
    axe_violations,
    open_signed_in,
    shot,
    shot_whole,
    ticket_url,
    unreachable_by_tab,
)
from tests.support.devices import device_id
from tests.support.wsclient import ProtoClient

pytestmark = pytest.mark.xdist_group("browser")

READ = ["operator.read"]
MANUAL = "[gateway]\nauto_approve_loopback_devices = false\n"
"""Loopback devices wait for approval too, as devices on the network do."""
LAN = '[gateway]\nbind = "lan"\nauto_approve_loopback_devices = false\n'
"""Listening on every interface, so the gateway hands out setup codes."""


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    async with Chromium() as browser:
        yield browser


async def connect_device(
    client: ProtoClient,
    key: Ed25519PrivateKey,
    *,
    token: str = "",
    name: str = "Pixel 8",
    scopes: list[str] = READ,
    role: str = "operator",
    bootstrap: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A device's `connect`, signed with its key (the shared token, its own device token or
    a setup code's bootstrap token)."""
    return await client.connect_signed(
        key,
        secret=bootstrap or token,
        scopes=scopes,
        role=role,
        client={"displayName": name},
        auth={"bootstrapToken": bootstrap} if bootstrap else {"token": token},
        **extra,
    )


async def ask_to_pair(
    handle: GatewayHandle, make_client: MakeClient, key: Ed25519PrivateKey, name: str
) -> str:
    res = await connect_device(make_client(handle.url), key, token=handle.token, name=name)
    assert res["error"]["code"] == "NOT_PAIRED", res
    return str(res["error"]["details"]["requestId"])


async def open_devices(chromium: Chromium, handle: GatewayHandle, **kw: Any) -> Page:
    page = await open_signed_in(chromium, handle.http, handle.token, **kw)
    await page.click("[data-testid=nav-devices]")
    await expect(page.locator("[data-testid=paired]")).to_be_visible()
    return page


def qr_text(png: bytes) -> str:
    (found,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    return str(found.text)


# ----------------------------------------------------------------- approve and manage


async def test_a_device_asks_is_approved_renamed_rotated_revoked_and_removed(
    chromium: Chromium, start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(MANUAL)
    page = await open_devices(chromium, handle)
    pending = page.locator("[data-testid=pending-row]")
    await expect(page.locator("[data-testid=pending]")).to_contain_text("No device is waiting")

    # A device asks: the request shows up live (device.pair.requested), with what it asks.
    key = Ed25519PrivateKey.generate()
    request_id = await ask_to_pair(handle, make_client, key, "Pixel 8")
    await expect(pending).to_have_count(1)
    row = pending.first
    await expect(row).to_have_attribute("data-request", request_id)
    await expect(row).to_contain_text("Pixel 8")
    await expect(row).to_contain_text("127.0.0.1")
    await expect(row).to_contain_text("read")
    await expect(row).to_contain_text("just now")
    await shot(page, "devices-pending-desktop-light")

    await row.get_by_role("button", name="Approve Pixel 8").click()
    await expect(pending).to_have_count(0)
    paired = page.locator("[data-testid=paired-row]")
    await expect(paired).to_have_count(1)
    device = paired.first
    await expect(device.locator("[data-testid=device-name]")).to_have_text("Pixel 8")
    await expect(device).to_have_attribute("data-device", device_id(key))
    assert device_id(key) in handle.gateway.state.pairing.paired

    # It connects again and gets its token: the page shows it in use.
    first = await connect_device(make_client(handle.url), key, token=handle.token)
    assert first["ok"], first
    device_token = first["payload"]["auth"]["deviceToken"]
    await page.get_by_role("button", name="Refresh").click()
    token_row = device.locator("[data-testid=token-row][data-role=operator]")
    await expect(token_row).to_contain_text("active")
    await expect(device).to_contain_text("Connected")

    # Rename, inline: Enter saves.
    await device.get_by_role("button", name="Rename Pixel 8").click()
    await page.fill("[data-testid=device-name-input]", "Anna's phone")
    await page.keyboard.press("Enter")
    await expect(device.locator("[data-testid=device-name]")).to_have_text("Anna's phone")
    listed = await handle_list(handle, make_client)
    assert listed["paired"][0]["displayName"] == "Anna's phone"

    # Rotate asks first, then shows the new token once.
    await token_row.get_by_role("button", name="Rotate the operator token of Anna's phone").click()
    await expect(page.locator("[data-testid=dialog]")).to_contain_text("Rotate the operator token?")
    await page.click("[data-testid=dialog-confirm]")
    dialog = page.locator("[data-testid=token-dialog]")
    await expect(dialog).to_contain_text("won't be shown again")
    new_token = await page.locator("[data-testid=token-value]").input_value()
    assert len(new_token) >= 32 and new_token != device_token
    await shot(page, "devices-token-once-desktop-light")
    # Tab stays in the dialog; Done puts the focus back on Rotate.
    for _ in range(5):
        await page.keyboard.press("Tab")
    assert await page.evaluate("() => !!document.activeElement.closest('[role=dialog]')")
    # The new token works, the old one does not.
    assert (await connect_device(make_client(handle.url), key, token=new_token))["ok"]
    old = await connect_device(make_client(handle.url), key, token=device_token)
    assert old["ok"] is False
    await page.click("[data-testid=token-done]")
    await expect(dialog).to_have_count(0)
    await expect(token_row.locator("[data-testid=token-rotate]")).to_be_focused()
    assert new_token not in await page.content()

    # Revoke (with a confirmation): the row says so, and the token is refused.
    await token_row.get_by_role("button", name="Revoke the operator token of Anna's phone").click()
    await page.click("[data-testid=dialog-confirm]")
    await expect(token_row.locator("[data-testid=token-revoked]")).to_contain_text("revoked")
    await expect(token_row.get_by_role("button", name="Issue the operator token")).to_be_visible()
    assert (await connect_device(make_client(handle.url), key, token=new_token))["ok"] is False
    await shot(page, "devices-paired-desktop-light")

    # Remove asks first: Cancel keeps it, confirming removes it.
    await device.get_by_role("button", name="Remove Anna's phone").click()
    await expect(page.locator("[data-testid=dialog]")).to_contain_text("Remove Anna's phone?")
    await shot(page, "devices-remove-confirm-desktop-light")
    await page.get_by_role("button", name="Cancel").click()
    await expect(paired).to_have_count(1)
    await device.get_by_role("button", name="Remove Anna's phone").click()
    await page.click("[data-testid=dialog-confirm]")
    await expect(paired).to_have_count(0)
    await expect(page.locator("[data-testid=paired]")).to_contain_text("No paired device yet")
    assert (await handle_list(handle, make_client))["paired"] == []
    assert page.errors == []  # type: ignore[attr-defined]


async def handle_list(handle: GatewayHandle, make_client: MakeClient) -> dict[str, Any]:
    client = make_client(handle.url)
    res = await client.connect(token=handle.token, scopes=["operator.pairing"])
    assert res["ok"], res
    listed = await client.request("device.pair.list", {})
    assert listed["ok"], listed
    return dict(listed["payload"])


async def test_reject_and_a_stale_request_says_what_happened(
    chromium: Chromium, start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(MANUAL)
    page = await open_devices(chromium, handle)
    rows = page.locator("[data-testid=pending-row]")
    await ask_to_pair(handle, make_client, Ed25519PrivateKey.generate(), "Stranger's laptop")
    stale = await ask_to_pair(handle, make_client, Ed25519PrivateKey.generate(), "Old tablet")
    await expect(rows).to_have_count(2)
    await rows.filter(has_text="Stranger's laptop").get_by_role("button", name="Reject").click()
    await expect(rows).to_have_count(1)
    assert (await handle_list(handle, make_client))["paired"] == []
    # Decided elsewhere meanwhile (the CLI, the tray): the page's Approve fails inline,
    # with the reason, and the list catches up.
    handle.gateway.state.pairing.reject(stale)
    await rows.first.get_by_role("button", name="Approve Old tablet").click()
    await expect(page.locator("[data-testid=pending] .banner.error")).to_contain_text(
        "unknown or expired"
    )
    await expect(rows).to_have_count(0)


# ----------------------------------------------------------------- pairing codes


async def test_pairing_code_shows_a_qr_that_scans_to_the_code_and_completes(
    chromium: Chromium, start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(LAN)
    page = await open_devices(chromium, handle)
    panel = page.locator("[data-testid=pair-panel]")
    await page.locator("[data-testid=pair-access]").select_option("limited")
    await page.click("[data-testid=pair-show]")
    qr = page.locator("[data-testid=pair-qr]")
    await expect(qr).to_be_visible()
    code = (await page.locator("[data-testid=pair-code]").inner_text()).strip()
    await expect(page.locator("[data-testid=pair-timer]")).to_contain_text(
        re.compile(r"Scan within (10:00|9:[0-5]\d)")
    )
    await expect(panel.locator("[data-testid=pair-grants]")).to_have_text("Limited")
    # The QR image decodes to the code shown, from its data URL and from the screen.
    src = await qr.get_attribute("src") or ""
    assert src.startswith("data:image/png;base64,")
    for png in (base64.b64decode(src.split(",", 1)[1]), await qr.screenshot()):
        assert qr_text(png).removeprefix(LINK_PREFIX) == code
    setup = decode(code)
    assert setup.bootstrap_token and f":{handle.gateway.state.port}" in setup.url
    await expect(page.locator("[data-testid=pair-url]")).to_contain_text(setup.url)
    await shot(page, "devices-pair-code-desktop-light")

    # Regenerate: a new code (the first one stays valid until it expires).
    await page.click("[data-testid=pair-regenerate]")
    await expect(page.locator("[data-testid=pair-code]")).not_to_have_text(code)
    token = setup.bootstrap_token

    # A phone scans the first code: it waits for approval (marked as coming from a code),
    # is approved here, connects again, and the panel says it is paired.
    key = Ed25519PrivateKey.generate()
    phone = await connect_device(make_client(handle.url), key, bootstrap=token, name="Pixel 9")
    assert phone["error"]["code"] == "NOT_PAIRED", phone
    row = page.locator("[data-testid=pending-row]")
    await expect(row).to_contain_text("scanned a pairing code")
    await row.get_by_role("button", name="Approve Pixel 9").click()
    again = await connect_device(make_client(handle.url), key, bootstrap=token, name="Pixel 9")
    assert again["ok"], again
    await expect(page.locator("[data-testid=pair-done]")).to_contain_text("Pixel 9 paired")
    await expect(page.locator("[data-testid=paired-row]")).to_contain_text("Pixel 9")
    await shot(page, "devices-pair-done-desktop-light")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_an_expired_code_says_so_and_regenerates(
    chromium: Chromium, start_gateway: StartGateway
) -> None:
    handle = await start_gateway(LAN)
    page = await chromium.page()
    await page.clock.install()
    await page.goto(await ticket_url(handle.http, handle.token))
    await page.click("[data-testid=nav-devices]")
    await page.click("[data-testid=pair-show]")
    code = page.locator("[data-testid=pair-code]")
    first = await code.inner_text()
    # Ten minutes and a second later (on the page's clock: the gateway's expiry is shown
    # as a countdown).
    await page.clock.set_system_time(time.time() + 601)
    timer = page.locator("[data-testid=pair-timer]")
    await expect(timer).to_contain_text("This code expired")
    await expect(page.locator(".qr-expired")).to_have_text("Expired")
    await shot(page, "devices-pair-expired-desktop-light")
    await page.clock.set_system_time(time.time())
    await page.click("[data-testid=pair-regenerate]")
    await expect(code).not_to_have_text(first)
    await expect(timer).to_contain_text("Scan within")


async def test_a_loopback_gateway_says_phones_cannot_reach_it_and_offers_the_network(
    chromium: Chromium, start_gateway: StartGateway
) -> None:
    handle = await start_gateway(MANUAL)
    page = await open_devices(chromium, handle)
    await page.click("[data-testid=pair-show]")
    banner = page.locator("[data-testid=pair-lan-disabled]")
    await expect(banner).to_contain_text("Phones can't reach this gateway")
    await expect(banner).to_contain_text("gateway.bind")
    await expect(banner.get_by_role("link", name="Config")).to_have_attribute("href", "#/config")
    await shot(page, "devices-lan-disabled-desktop-light")
    # One click (and a confirmation) changes the setting, and the code follows.
    await page.click("[data-testid=pair-listen-lan]")
    await expect(page.locator("[data-testid=dialog]")).to_contain_text("Listen on the network?")
    await page.click("[data-testid=dialog-confirm]")
    await expect(page.locator("[data-testid=pair-qr]")).to_be_visible(timeout=10_000)
    assert 'bind = "lan"' in handle.config_file.read_text(encoding="utf-8")


# ----------------------------------------------------------------- nodes


async def test_nodes_are_listed_with_their_commands(
    chromium: Chromium, start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway()
    key = Ed25519PrivateKey.generate()
    commands = ["camera.snap", "camera.list", "location.get"]
    res = await connect_device(
        make_client(handle.url), key, token=handle.token, name="Kitchen tablet",
        role="node", scopes=[], caps=["camera", "location"], commands=commands,
    )  # fmt: skip
    assert res["ok"], res
    page = await open_devices(chromium, handle)
    row = page.locator("[data-testid=node-row]")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("Kitchen tablet")
    await expect(row).to_contain_text("Connected")
    await expect(row).to_contain_text("camera")
    commands_list = row.locator("details.commands")
    await expect(commands_list.locator("summary")).to_have_text("3 commands")
    assert await commands_list.get_attribute("open") is None
    await commands_list.locator("summary").click()
    await expect(commands_list).to_contain_text("location.get")
    await row.get_by_role("button", name="Rename Kitchen tablet").click()
    await page.fill("[data-testid=node-name-input]", "Hall tablet")
    await page.keyboard.press("Enter")
    await expect(row.locator("[data-testid=node-name]")).to_have_text("Hall tablet")

    # It comes back asking for one more command: that waits for approval, live.
    res = await connect_device(
        make_client(handle.url), key, token=handle.token, name="Hall tablet", role="node",
        scopes=[], caps=["camera", "location"], commands=[*commands, "system.notify"],
    )  # fmt: skip
    assert res["ok"], res
    request = page.locator("[data-testid=node-request-row]")
    await expect(request).to_contain_text("Hall tablet")
    await expect(request.locator(".pill.cmd")).to_have_text(["system.notify"])
    await shot_whole(page, "devices-nodes-desktop-light")
    await request.get_by_role("button", name="Approve the new commands of Hall tablet").click()
    await expect(request).to_have_count(0)
    await expect(commands_list.locator("summary")).to_have_text("4 commands")
    assert page.errors == []  # type: ignore[attr-defined]


# ----------------------------------------------------------------- looks, a11y, keyboard


async def _fill(handle: GatewayHandle, make_client: MakeClient) -> None:
    """A page worth looking at: one request waiting, two paired devices (one connected,
    one with a revoked token)."""
    await ask_to_pair(handle, make_client, Ed25519PrivateKey.generate(), "Galaxy Tab S9")
    store = handle.gateway.state.pairing
    for name, revoke in (("Anna's iPhone", False), ("Work laptop", True)):
        key = Ed25519PrivateKey.generate()
        request_id = await ask_to_pair(handle, make_client, key, name)
        store.approve(request_id)
        res = await connect_device(make_client(handle.url), key, token=handle.token, name=name)
        assert res["ok"], res
        if revoke:
            store.revoke(device_id(key), "operator")


@EVERY_LOOK
async def test_devices_screenshots_and_axe(
    chromium: Chromium,
    start_gateway: StartGateway,
    make_client: MakeClient,
    theme: str,
    size: str,
    viewport: dict[str, int],
) -> None:
    handle = await start_gateway(LAN)
    await _fill(handle, make_client)
    page = await open_devices(chromium, handle, viewport=viewport, color_scheme=theme)
    await expect(page.locator("[data-testid=paired-row]")).to_have_count(2)
    await page.click("[data-testid=pair-show]")
    await expect(page.locator("[data-testid=pair-qr]")).to_be_visible()
    await page.wait_for_timeout(150)
    await shot_whole(page, f"devices-{size}-{theme}")
    violations = await axe_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 1, f"the devices page overflows the {size} viewport by {overflow}px"
    # The token dialog and the inline rename pass too.
    await page.locator("[data-testid=token-rotate]").first.click()
    await page.click("[data-testid=dialog-confirm]")
    await expect(page.locator("[data-testid=token-dialog]")).to_be_visible()
    await shot(page, f"devices-token-{size}-{theme}")
    assert await axe_violations(page) == []
    await page.click("[data-testid=token-done]")
    await page.locator("[data-testid=device-rename]").first.click()
    await expect(page.locator("[data-testid=device-name-input]")).to_be_focused()
    assert await axe_violations(page) == []
    await page.keyboard.press("Escape")
    await expect(page.locator("[data-testid=device-name-input]")).to_have_count(0)


async def test_every_devices_control_is_reachable_by_keyboard(
    chromium: Chromium, start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(LAN)
    await _fill(handle, make_client)
    page = await open_devices(chromium, handle)
    await page.click("[data-testid=pair-show]")
    await expect(page.locator("[data-testid=pair-qr]")).to_be_visible()
    missed = await unreachable_by_tab(page, CONTROLS + ', [tabindex="0"]')
    assert missed == [], f"not reachable with Tab: {missed}"
    # Approve from the keyboard alone.
    await page.get_by_role("button", name="Approve Galaxy Tab S9").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-testid=paired-row]")).to_have_count(3)
