"""The web app end to end: headless Chromium against a real gateway with the fake LLM."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from moltis_desktop.runtime import Runtime
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.browser import (
    EVERY_LOOK,
    Chromium,
    axe_violations,
    open_signed_in,
    shot,
    ticket_url,
    unreachable_by_tab,
    wait_ready,
)
from tests.support.fake_llm import FakeLLM, Turn, Usage, agent_config
from tests.support.tcpproxy import FreezableProxy

pytestmark = pytest.mark.xdist_group("browser")

MAIN = "agent:main:main"


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    async with Chromium() as browser:
        yield browser


@pytest.fixture
async def ui_gateway(start_gateway: StartGateway, fake: FakeLLM) -> GatewayHandle:
    prices = '[usage.prices."fake/fake-model-1"]\ninput = 3.0\noutput = 15.0\n'
    return await start_gateway(
        agent_config("anthropic", fake, prices),
        env={"FAKE_LLM_KEY": "fake-key", "MOLTIS_SECRETS_PASSPHRASE": "test-passphrase"},
    )


async def send(page: Page, text: str) -> None:
    await page.fill("[data-testid=composer]", text)
    await page.keyboard.press("Enter")


async def last_reply(page: Page) -> Any:
    reply = page.locator("[data-testid=msg-assistant]").last
    await expect(reply).to_be_visible(timeout=15_000)
    return reply


# ----------------------------------------------------------------- sign-in


async def test_sign_in_screen_with_token(chromium: Chromium, ui_gateway: GatewayHandle) -> None:
    page = await chromium.page()
    await page.goto(ui_gateway.http + "/")
    await expect(page.get_by_role("heading", name="Sign in to this gateway")).to_be_visible()
    await shot(page, "signin-desktop-light")
    await page.fill("[data-testid=signin-secret]", "not-the-token")
    await page.click("[data-testid=signin-submit]")
    await expect(page.locator("[data-testid=signin-error]")).to_contain_text("token mismatch")
    await page.fill("[data-testid=signin-secret]", ui_gateway.token)
    await page.click("[data-testid=signin-submit]")
    await wait_ready(page)
    await expect(page.locator("[data-testid=chat-title]")).to_have_text("Main chat")
    # The credential is in the tab's session storage, never in the URL or the log.
    assert ui_gateway.token not in page.url
    stored = await page.evaluate("() => sessionStorage.getItem('moltis.auth')")
    assert json.loads(stored) == {"token": ui_gateway.token}
    assert ui_gateway.token not in ui_gateway.log_file.read_text(encoding="utf-8")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_sign_in_asks_for_what_the_gateway_wants(
    chromium: Chromium, start_gateway: StartGateway
) -> None:
    # Password mode: the screen asks for the password.
    handle = await start_gateway(
        '[gateway.auth]\nmode = "password"\n', env={"MOLTIS_PASSWORD": "correct horse battery"}
    )
    page = await chromium.page()
    await page.goto(handle.http + "/")
    await expect(page.get_by_role("radio", name="Password")).to_be_checked()
    await page.fill("[data-testid=signin-secret]", "correct horse battery")
    await page.click("[data-testid=signin-submit]")
    await wait_ready(page)
    # Mode none (loopback only): no sign-in at all.
    open_gateway = await start_gateway('[gateway.auth]\nmode = "none"\n', token=None)
    page = await chromium.page()
    await page.goto(open_gateway.http + "/")
    await wait_ready(page)
    await expect(page.get_by_role("heading", name="Sign in to this gateway")).to_have_count(0)


async def test_ticket_link_signs_in_and_leaves_the_address_bar(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    url = await ticket_url(ui_gateway.http, ui_gateway.token)
    page = await chromium.page()
    await page.goto(url)
    await wait_ready(page)
    assert "ticket" not in page.url
    assert page.url.endswith("#/chat")
    # The same link a second time is spent: the sign-in screen says so.
    again = await chromium.page()
    await again.goto(url)
    await expect(again.locator("[data-testid=signin-error]")).to_contain_text("expired")


# ----------------------------------------------------------------- chat


async def test_reply_streams_as_markdown_with_usage(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    text = (
        "Here is **bold** and a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\ndef double(x):\n    return x * 2\n```\n\nSee [the docs](https://example.com/docs)."
    )
    fake.script(
        Turn(
            text=text,
            chunks=8,
            delay_s=0.12,
            thinking="Consider the table.",
            usage=Usage(1200, 340, 0, 0),
        )
    )
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "show me formatting")
    live = page.locator("[data-testid=live-reply]")
    await expect(live).to_be_visible()
    # Part of the reply shows before the whole of it is there.
    await expect(live).to_contain_text("Here is")
    partial = await live.inner_text()
    assert "the docs" not in partial
    reply = await last_reply(page)
    await expect(live).to_have_count(0)
    await expect(reply.locator("strong")).to_have_text("bold")
    await expect(reply.locator("table td").first).to_have_text("1")
    await expect(reply.locator(".code-block .code-lang")).to_have_text("python")
    await expect(reply.locator(".code-block .hljs-keyword").first).to_have_text("def")
    link = reply.locator("a", has_text="the docs")
    assert await link.get_attribute("target") == "_blank"
    assert "noopener" in (await link.get_attribute("rel") or "")
    thinking = reply.locator("[data-testid=thinking]")
    await expect(thinking).to_be_visible()
    assert await thinking.get_attribute("open") is None  # collapsed
    await expect(reply.locator("[data-testid=usage]")).to_contain_text("1.2k in · 340 out")
    # 1,200 in at $3/M and 340 out at $15/M.
    await expect(reply.locator("[data-testid=usage]")).to_contain_text("$0.0087")
    # The copy button copies the code.
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await reply.locator("[data-copy-code]").click()
    await expect(reply.locator("[data-copy-code]")).to_have_text("Copied")
    assert "return x * 2" in await page.evaluate("() => navigator.clipboard.readText()")
    await shot(page, "chat-streamed-desktop-light")


async def test_tool_call_is_a_collapsible_card(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(tool_calls=[("current_time", {})]), Turn(text="It is late."))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "what time is it?")
    reply = await last_reply(page)
    await expect(reply).to_contain_text("It is late.")
    card = reply.locator("[data-testid=tool-card]")
    await expect(card).to_have_count(1)
    await expect(card.locator(".tool-name")).to_have_text("current_time")
    await expect(card.locator(".tool-status")).to_have_text("done")
    assert await card.get_attribute("open") is None
    await card.locator("summary").click()
    await expect(card.locator(".tool-pre").last).to_contain_text("20")  # the time's year
    await shot(page, "chat-tool-card-desktop-light")


async def test_stop_with_button_and_escape(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(
        Turn(text="a long answer that never ends", hang=True),
        Turn(text="another endless one", hang=True),
    )
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "talk forever")
    await expect(page.locator("[data-testid=live-reply]")).to_contain_text("a long")
    await page.click("[data-testid=stop]")
    reply = await last_reply(page)
    await expect(reply.locator(".msg-flag")).to_have_text("Stopped")
    await expect(page.locator("[data-testid=send]")).to_be_visible()
    # Esc stops too.
    await send(page, "again")
    await expect(page.locator("[data-testid=live-reply]")).to_contain_text("another")
    await page.keyboard.press("Escape")
    await expect(page.locator("[data-testid=live-reply]")).to_have_count(0)
    await expect(page.locator(".msg-flag")).to_have_count(2)


async def test_retry_and_edit_and_resend(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(text="first try"), Turn(text="second try"), Turn(text="edited answer"))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "hello there")
    await expect(await last_reply(page)).to_contain_text("first try")
    await page.get_by_role("button", name="Retry").click()
    await expect(page.locator("[data-testid=msg-assistant]").last).to_contain_text("second try")
    assert _last_user_text(fake) == "hello there"
    await page.locator("[data-testid=msg-user]").first.get_by_role("button", name="Edit").click()
    await page.fill("textarea.edit-box", "hello again, edited")
    await page.get_by_role("button", name="Send edited").click()
    await expect(page.locator("[data-testid=msg-assistant]").last).to_contain_text("edited answer")
    assert _last_user_text(fake) == "hello again, edited"


def _last_user_text(fake: FakeLLM) -> str:
    body = [r for r in fake.requests if r.method == "POST"][-1].body
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


async def test_keyboard_newline_and_attachments(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM, tmp_path: Path
) -> None:
    fake.script(Turn(text="got them"))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    box = page.locator("[data-testid=composer]")
    await box.click()
    await page.keyboard.type("line one")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("line two")
    assert await box.input_value() == "line one\nline two"
    notes = tmp_path / "notes.txt"
    notes.write_text("the attached notes", encoding="utf-8")
    pixel = tmp_path / "pixel.png"
    pixel.write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
        )
    )
    await page.set_input_files("[data-testid=file-input]", [str(notes), str(pixel)])
    await expect(page.locator(".attachments .chip")).to_have_count(2)
    # Dropping a file on the chat and pasting one into the box attach them too.
    await page.evaluate(
        """() => {
          const dt = new DataTransfer();
          dt.items.add(new File(['dropped text'], 'dropped.txt', {type: 'text/plain'}));
          const chat = document.querySelector('.chat');
          const opts = {dataTransfer: dt, bubbles: true, cancelable: true};
          chat.dispatchEvent(new DragEvent('dragover', opts));
          chat.dispatchEvent(new DragEvent('drop', opts));
          const paste = new DataTransfer();
          paste.items.add(new File(['pasted text'], 'pasted.txt', {type: 'text/plain'}));
          document.querySelector('[data-testid=composer]').dispatchEvent(
            new ClipboardEvent('paste', {clipboardData: paste, bubbles: true, cancelable: true}));
        }"""
    )
    await expect(page.locator(".attachments .chip")).to_have_count(4)
    await (
        page.locator(".attachments .chip", has_text="pasted.txt")
        .get_by_role("button", name="Remove pasted.txt")
        .click()
    )
    await expect(page.locator(".attachments .chip")).to_have_count(3)
    await box.focus()
    await page.keyboard.press("Enter")
    await expect(await last_reply(page)).to_contain_text("got them")
    body = [r for r in fake.requests if r.method == "POST"][-1].body
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    kinds = [b["type"] for b in user]
    assert "image" in kinds
    text = "".join(b.get("text", "") for b in user if b["type"] == "text")
    assert "line one\nline two" in text
    assert "notes.txt:" in text and "the attached notes" in text
    assert "dropped.txt:" in text and "dropped text" in text
    assert "pasted text" not in text
    await expect(page.locator("[data-testid=msg-user] .msg-images img")).to_have_count(1)


async def test_model_picker_and_thinking_level_patch_the_session(
    chromium: Chromium, ui_gateway: GatewayHandle, make_client: MakeClient
) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    picker = page.locator("[data-testid=model-picker]")
    # The catalogue fills in once the provider has answered (the page asks again).
    await expect(picker.locator("option", has_text="fake/fake-model-2")).to_have_count(
        1, timeout=15_000
    )
    await picker.select_option("fake/fake-model-2")
    await page.locator("[data-testid=thinking-picker]").select_option("high")
    client = make_client(ui_gateway.url)
    await client.connect(token=ui_gateway.token)
    for _ in range(50):
        history = (await client.request("chat.history", {"sessionKey": MAIN}))["payload"]
        if history.get("thinkingLevel") == "high":
            break
        await asyncio.sleep(0.1)
    assert history["modelOverride"] == "fake/fake-model-2"
    assert history["thinkingLevel"] == "high"


# ----------------------------------------------------------------- sessions


async def test_sessions_new_switch_rename_delete(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(text="main answer"), Turn(text="side answer"))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "in the main chat")
    await expect(await last_reply(page)).to_contain_text("main answer")
    rows = page.locator("[data-testid=session-list] .session-row")
    await expect(rows.first).to_contain_text("main answer")  # the last message
    await expect(rows.first).to_contain_text("just now")

    await page.click("[data-testid=new-chat]")
    await expect(page.locator("[data-testid=msg-assistant]")).to_have_count(0)
    await send(page, "in a new chat")
    await expect(await last_reply(page)).to_contain_text("side answer")
    await expect(rows).to_have_count(2)
    assert "/chat/agent%3Amain%3Aweb-" in page.url

    # Back to the main chat: its own history.
    await page.locator(".session-link", has_text="Main chat").click()
    await expect(page.locator("[data-testid=msg-assistant]").last).to_contain_text("main answer")

    # Rename the other one.
    other = rows.filter(has_text="side answer")
    await other.get_by_role("button", name="Actions for").click()
    await page.get_by_role("menuitem", name="Rename").click()
    await page.fill("[data-testid=dialog-input]", "Side quest")
    await page.click("[data-testid=dialog-confirm]")
    await expect(rows.filter(has_text="Side quest")).to_have_count(1)

    # Search.
    await page.fill("[data-testid=session-search]", "quest")
    await expect(rows).to_have_count(1)
    await page.fill("[data-testid=session-search]", "")
    await expect(rows).to_have_count(2)

    # Ctrl+K switches.
    await page.keyboard.press("Control+k")
    await expect(page.locator("[data-testid=switcher]")).to_be_visible()
    await expect(page.locator("[data-testid=switcher] input")).to_be_focused()
    await page.keyboard.type("side")
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-testid=chat-title]")).to_have_text("Side quest")

    # Delete asks first: cancel keeps it, confirm removes it.
    side = rows.filter(has_text="Side quest")
    await side.get_by_role("button", name="Actions for").click()
    await page.get_by_role("menuitem", name="Delete").click()
    await expect(page.locator("[data-testid=dialog]")).to_contain_text("Delete this chat?")
    await shot(page, "sessions-delete-confirm-desktop-light")
    await page.get_by_role("button", name="Cancel").click()
    await expect(rows).to_have_count(2)
    await side.get_by_role("button", name="Actions for").click()
    await page.get_by_role("menuitem", name="Delete").click()
    await page.click("[data-testid=dialog-confirm]")
    await expect(rows).to_have_count(1)
    await expect(page.locator("[data-testid=chat-title]")).to_have_text("Main chat")


async def test_long_history_renders_the_latest_first(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM, make_client: MakeClient
) -> None:
    client = make_client(ui_gateway.url)
    await client.connect(token=ui_gateway.token, scopes=["operator.admin"])
    fake.script(*(Turn(text=f"answer {i}") for i in range(8)))
    for i in range(8):
        res = await client.request(
            "chat.send", {"sessionKey": MAIN, "message": f"question {i}", "idempotencyKey": f"q{i}"}
        )
        assert res["ok"], res
        while (await client.next_event("chat"))["payload"]["state"] != "final":
            pass
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    bubbles = page.locator("[data-testid=msg-user], [data-testid=msg-assistant]")
    await expect(bubbles).to_have_count(12)  # 16 in all; the latest 12 first
    await expect(bubbles.last).to_contain_text("answer 7")
    earlier = page.get_by_role("button", name="Show 4 earlier messages")
    await expect(earlier).to_be_visible()
    # Scrolling up to them shows them, with the view kept where it was.
    await page.locator("[data-testid=messages]").evaluate("el => { el.scrollTop = 0; }")
    await expect(bubbles).to_have_count(16)
    await expect(bubbles.first).to_contain_text("question 0")
    assert await page.locator("[data-testid=messages]").evaluate("el => el.scrollTop") > 0


async def test_sidebar_follows_other_clients(
    chromium: Chromium, ui_gateway: GatewayHandle, make_client: MakeClient
) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    client = make_client(ui_gateway.url)
    await client.connect(token=ui_gateway.token, scopes=["operator.admin"])
    res = await client.request(
        "sessions.patch", {"key": "agent:main:elsewhere", "label": "From the CLI"}
    )
    assert res["ok"], res
    await expect(page.locator(".session-row", has_text="From the CLI")).to_have_count(1)


# ----------------------------------------------------------------- explorer


async def test_method_explorer_calls_a_method(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await page.click("[data-testid=nav-explorer]")
    methods = page.locator("[data-testid=method-list] button")
    await expect(methods.first).to_be_visible()
    await page.get_by_role("button", name="sessions.preview").click()
    params = page.locator("[data-testid=explorer-params]")
    # Prefilled from the method's schema: its required field.
    # (methods.json may arrive after the click; the prefill follows it.)
    await expect(params).to_have_value(json.dumps({"keys": ["…"]}, indent=2, ensure_ascii=False))
    await page.fill("[data-testid=explorer-params]", json.dumps({"keys": [MAIN]}))
    await page.click("[data-testid=explorer-call]")
    result = page.locator("[data-testid=explorer-result]")
    await expect(result).to_contain_text("OK")
    await expect(result).to_contain_text('"previews"')
    # A bad call shows the gateway's error.
    await page.fill("[data-testid=explorer-params]", "{}")
    await page.click("[data-testid=explorer-call]")
    await expect(result).to_contain_text("INVALID_REQUEST")
    # Invalid JSON is caught before sending.
    await page.fill("[data-testid=explorer-params]", "{nope")
    await expect(page.locator("[data-testid=explorer-call]")).to_be_disabled()
    # The live event log shows events as they come (this call makes one).
    await page.get_by_role("button", name="sessions.patch").click()
    await page.fill(
        "[data-testid=explorer-params]", json.dumps({"key": MAIN, "label": "Renamed here"})
    )
    await page.click("[data-testid=explorer-call]")
    await expect(result).to_contain_text("Renamed here")
    await expect(page.locator("[data-testid=event-log]")).to_contain_text("sessions.changed")
    await shot(page, "explorer-result-desktop-light")


# ----------------------------------------------------------------- config


async def test_config_bad_save_shows_the_error_inline(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await page.click("[data-testid=nav-config]")
    await page.click("[data-testid=config-tab-raw]")
    raw = page.locator("[data-testid=config-raw]")
    original = await raw.input_value()
    await raw.fill(original + '\n[gateway]\nport = "not a number"\n')
    await page.click("[data-testid=config-save]")
    issues = page.locator("[data-testid=config-issues]")
    await expect(issues).to_contain_text("gateway.port")
    await expect(page.locator(".gutter li.bad")).to_have_count(1)
    await shot(page, "config-error-desktop-light")
    # Nothing was written.
    assert ui_gateway.config_file.read_text(encoding="utf-8") == original


async def test_config_save_over_a_stale_hash_is_a_conflict(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await page.click("[data-testid=nav-config]")
    await page.click("[data-testid=config-tab-raw]")
    raw = page.locator("[data-testid=config-raw]")
    mine = (await raw.input_value()) + "\n# my edit\n"
    await raw.fill(mine)
    theirs = ui_gateway.config_file.read_text(encoding="utf-8") + "\n# their edit\n"
    ui_gateway.config_file.write_text(theirs, encoding="utf-8")
    # The gateway notices the new file (config.changed): the page says so and keeps the edit.
    await expect(page.locator("[data-testid=config-changed-on-disk]")).to_be_visible(timeout=10_000)
    assert await raw.input_value() == mine
    await page.click("[data-testid=config-save]")
    await expect(page.locator("[data-testid=config-conflict]")).to_contain_text(
        "changed since you opened it"
    )
    assert await raw.input_value() == mine  # the user's edit is kept
    assert ui_gateway.config_file.read_text(encoding="utf-8") == theirs
    await shot(page, "config-conflict-desktop-light")
    # Their version can be loaded, and saved over without a conflict.
    await page.get_by_role("button", name="Load their version").click()
    assert await raw.input_value() == theirs
    await raw.fill(theirs + "# merged\n")
    await page.click("[data-testid=config-save]")
    await expect(page.locator("[data-testid=config-conflict]")).to_have_count(0)
    await expect(page.locator(".toast")).to_contain_text("Saved")
    assert ui_gateway.config_file.read_text(encoding="utf-8").endswith("# merged\n")


async def test_config_form_stores_keys_in_the_secret_store(
    chromium: Chromium, ui_gateway: GatewayHandle
) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await page.click("[data-testid=nav-config]")
    await page.fill("[data-testid=key-fake]", "sk-from-the-form-123")
    await page.fill("[data-testid=config-model]", "fake/fake-model-2")
    await page.click("[data-testid=config-form-save]")
    await expect(page.locator(".provider .pill.ok")).to_have_text("stored")
    text = ui_gateway.config_file.read_text(encoding="utf-8")
    assert 'model = "fake/fake-model-2"' in text
    assert "sk-from-the-form-123" not in text
    secrets = ui_gateway.runtime.secrets
    assert secrets is not None and secrets.get("fake-api-key") == "sk-from-the-form-123"
    # The key never comes back to the page.
    assert "sk-from-the-form-123" not in await page.content()


# ----------------------------------------------------------------- status, theme


async def test_status_view(chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM) -> None:
    fake.script(Turn(text="counted", usage=Usage(1000, 200, 0, 0)))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "count me")
    await expect(await last_reply(page)).to_contain_text("counted")
    await page.click("[data-testid=nav-status]")
    await expect(page.locator("[data-testid=status-health]")).to_contain_text("Healthy")
    await expect(page.locator("[data-testid=status-models]")).to_contain_text("fake-model-1")
    await expect(page.locator("[data-testid=status-usage]")).to_contain_text("1.2k tokens")
    await expect(page.locator("[data-testid=usage-chart] rect")).to_have_count(1)
    await expect(page.locator("[data-testid=status-clients]")).to_contain_text("Moltis web app")
    await expect(page.locator("[data-testid=log-box]")).to_contain_text("gateway listening")


async def test_theme_toggle(chromium: Chromium, ui_gateway: GatewayHandle) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token, color_scheme="light")
    bg = "() => getComputedStyle(document.body).backgroundColor"
    light = await page.evaluate(bg)
    await page.click("[data-testid=theme-toggle]")
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    dark = await page.evaluate(bg)
    assert light != dark
    await page.reload()
    await wait_ready(page)
    assert await page.evaluate(bg) == dark  # the choice is kept
    # With no choice stored, the system's scheme rules.
    system = await chromium.page(color_scheme="dark")
    await system.goto(await ticket_url(ui_gateway.http, ui_gateway.token))
    await wait_ready(system)
    assert await system.evaluate(bg) == dark


# ----------------------------------------------------------------- reconnect


async def test_reconnects_after_the_gateway_restarts(
    chromium: Chromium, tmp_path: Path, fake: FakeLLM
) -> None:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "moltis.toml").write_text(agent_config("anthropic", fake))
    env = {
        "MOLTIS_HOME": str(home),
        "HOME": str(home),
        "MOLTIS_TOKEN": "restart-token-123",
        "FAKE_LLM_KEY": "k",
    }
    runtime = Runtime(env=env, overrides={"gateway": {"port": 0}}, console=None, prompt=None)
    gateway = await runtime.start()
    await runtime.agent_ready()
    port = gateway.state.port
    http = f"http://127.0.0.1:{port}"
    fake.script(Turn(text="before the restart"), Turn(text="after the restart"))
    try:
        page = await open_signed_in(chromium, http, "restart-token-123")
        await send(page, "one")
        await expect(await last_reply(page)).to_contain_text("before the restart")
        await runtime.stop()
        await expect(page.locator("[data-testid=conn-banner]")).to_contain_text("Reconnecting")
        await shot(page, "reconnecting-desktop-light")
        runtime = Runtime(env=env, overrides={"gateway": {"port": port}}, console=None, prompt=None)
        await runtime.start()
        await runtime.agent_ready()
        await expect(page.locator("[data-testid=conn-banner]")).to_have_count(0, timeout=20_000)
        await expect(page.locator("[data-testid=conn-state]")).to_have_attribute(
            "data-state", "connected"
        )
        # History came back from the gateway, and chatting works again.
        await expect(page.locator("[data-testid=msg-assistant]")).to_contain_text(
            "before the restart"
        )
        await send(page, "two")
        await expect(page.locator("[data-testid=msg-assistant]").last).to_contain_text(
            "after the restart"
        )
    finally:
        await runtime.stop()


async def test_tick_watchdog_reconnects_a_silent_link(
    chromium: Chromium, start_gateway: StartGateway
) -> None:
    handle = await start_gateway("[gateway]\ntick_interval_ms = 1000\n")
    proxy = await FreezableProxy(handle.gateway.state.port).start()
    try:
        http = f"http://127.0.0.1:{proxy.port}"
        page = await chromium.page()
        await page.goto(await ticket_url(http, handle.token))
        await expect(page.locator("[data-testid=conn-state]")).to_have_attribute(
            "data-state", "connected"
        )
        before = {c.conn_id for c in handle.gateway.state.connections}
        # The link goes silent without closing: two missed ticks and the page notices,
        # says so, and connects again (through the same proxy, working again).
        proxy.freeze()
        await expect(page.locator("[data-testid=conn-banner]")).to_contain_text(
            "Reconnecting", timeout=10_000
        )
        proxy.thaw()
        await expect(page.locator("[data-testid=conn-state]")).to_have_attribute(
            "data-state", "connected", timeout=15_000
        )
        after = {c.conn_id for c in handle.gateway.state.connections}
        assert after - before, "no new connection after the watchdog fired"
    finally:
        await proxy.close()


async def test_a_gap_in_seq_resyncs_the_history(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM, make_client: MakeClient
) -> None:
    """Events the page never got (a run's `chat`/`agent` frames, dropped on the way) are
    noticed at the next event's `seq`, and the history is fetched again."""
    dropping = {"on": False}

    def route(ws: Any) -> None:
        server = ws.connect_to_server()
        ws.on_message(server.send)

        def to_page(message: str | bytes) -> None:
            if dropping["on"]:
                frame = json.loads(message)
                if frame.get("type") == "event" and frame.get("event") in ("chat", "agent"):
                    return
            ws.send(message)

        server.on_message(to_page)

    page = await chromium.page()
    await page.route_web_socket(re.compile(r"^ws://"), route)
    await page.goto(await ticket_url(ui_gateway.http, ui_gateway.token))
    await wait_ready(page)
    fake.script(Turn(text="a reply the page never heard about"))
    other = make_client(ui_gateway.url)
    await other.connect(token=ui_gateway.token, scopes=["operator.admin"])
    dropping["on"] = True
    res = await other.request(
        "chat.send", {"sessionKey": MAIN, "message": "from elsewhere", "idempotencyKey": "gap-1"}
    )
    assert res["ok"], res
    while (await other.next_event("chat"))["payload"]["state"] != "final":
        pass
    await page.wait_for_timeout(300)
    await expect(page.locator("[data-testid=msg-assistant]")).to_have_count(0)
    dropping["on"] = False
    # The next event the page does get (this one) shows the gap.
    await other.request("sessions.patch", {"key": "agent:main:other", "label": "x"})
    await expect(page.locator("[data-testid=msg-assistant]")).to_contain_text(
        "a reply the page never heard about"
    )


# ----------------------------------------------------------------- security


XSS_REPLY = (
    'Look: <img src=x onerror="window.__xss = (window.__xss || 0) + 1">\n\n'
    '[click me](javascript:window.__xss=2) and <a href="javascript:window.__xss=3">this</a>\n\n'
    "<script>window.__xss = 4</script>\n\n"
    '<svg onload="window.__xss=5"></svg><iframe src="javascript:window.__xss=6"></iframe>'
)


async def test_model_and_user_content_cannot_run_script(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(text=XSS_REPLY, chunks=5))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, '<img src=y onerror="window.__xss=7"> [me](javascript:window.__xss=8)')
    reply = await last_reply(page)
    await expect(reply).to_contain_text("Look:")
    await page.wait_for_timeout(300)
    for link in await page.locator(".messages a").all():
        href = await link.get_attribute("href")
        assert href is None or not href.lower().startswith("javascript"), href
        await link.click(modifiers=["Alt"], no_wait_after=True)
    await page.wait_for_timeout(300)
    assert await page.evaluate("() => window.__xss") is None
    assert (
        await page.locator(".messages script, .messages iframe, .messages svg[onload]").count() == 0
    )
    assert await page.locator(".messages [onerror]").count() == 0
    # After a reload the history (rendered from the transcript) is just as inert.
    await page.reload()
    await wait_ready(page)
    await page.wait_for_timeout(300)
    assert await page.evaluate("() => window.__xss") is None


async def test_csp_forbids_inline_script(chromium: Chromium, ui_gateway: GatewayHandle) -> None:
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    ran = await page.evaluate(
        "() => new Promise(resolve => { const s = document.createElement('script');"
        " s.textContent = 'window.__inline = 1'; document.body.appendChild(s);"
        " setTimeout(() => resolve(window.__inline === 1), 100); })"
    )
    assert ran is False


# ----------------------------------------------------------------- looks, a11y, phones


@EVERY_LOOK
async def test_every_view_screenshots_and_axe(
    chromium: Chromium,
    ui_gateway: GatewayHandle,
    fake: FakeLLM,
    theme: str,
    size: str,
    viewport: dict[str, int],
) -> None:
    fake.script(
        Turn(
            text="Sure. Here is a function:\n\n```js\nconst add = (a, b) => a + b;\n```\n\n"
            "| x | y |\n|---|---|\n| 1 | 2 |",
            thinking="Short and sweet.",
            usage=Usage(820, 96, 0, 0),
        ),
    )
    page = await open_signed_in(
        chromium, ui_gateway.http, ui_gateway.token, viewport=viewport, color_scheme=theme
    )
    await send(page, "Write an add function in **JavaScript**")
    await expect(await last_reply(page)).to_contain_text("Here is a function")
    failures: dict[str, list[Any]] = {}
    for view in ("chat", "explorer", "config", "status"):
        await page.click(f"[data-testid=nav-{view}]")
        marker = {
            "chat": "[data-testid=msg-assistant]",
            "explorer": "[data-testid=method-list] button",
            "config": "[data-testid=config-form-save]",
            "status": "[data-testid=status-health]",
        }[view]
        await expect(page.locator(marker).first).to_be_visible()
        await page.wait_for_timeout(150)
        await shot(page, f"{view}-{size}-{theme}")
        violations = await axe_violations(page)
        if violations:
            failures[view] = violations
        # Nothing is wider than the screen.
        overflow = await page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 1, f"{view} overflows the {size} viewport by {overflow}px"
    assert failures == {}, json.dumps(failures, indent=1)
    if size == "phone":
        await page.click("[data-testid=nav-chat]")
        sidebar = page.locator(".sidebar")
        assert (await sidebar.bounding_box() or {"x": 0})["x"] < 0  # off screen
        assert await sidebar.evaluate("el => el.inert")  # and out of Tab's reach
        await page.get_by_role("button", name="Show chats").click()
        await expect(page.locator("[data-testid=new-chat]")).to_be_in_viewport()
        await page.wait_for_timeout(300)  # the drawer slides in
        assert not await sidebar.evaluate("el => el.inert")
        await shot(page, f"chat-sidebar-{size}-{theme}")


async def test_every_control_is_reachable_by_keyboard(
    chromium: Chromium, ui_gateway: GatewayHandle, fake: FakeLLM
) -> None:
    fake.script(Turn(tool_calls=[("current_time", {})]), Turn(text="done"))
    page = await open_signed_in(chromium, ui_gateway.http, ui_gateway.token)
    await send(page, "hi")
    await expect(await last_reply(page)).to_contain_text("done")
    for view in ("chat", "explorer", "config", "status"):
        await page.click(f"[data-testid=nav-{view}]")
        await page.wait_for_timeout(300)
        missed = await unreachable_by_tab(page, unrendered_file_inputs=True)
        assert missed == [], f"{view}: not reachable with Tab: {missed}"
