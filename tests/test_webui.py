"""The web app's server side: assets, headers, sign-in tickets, method metadata, and the
gateway methods the app relies on (moltis.secrets.*, sessions.changed, previews, cost)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from moltis_desktop.core.clock import ManualClock
from moltis_desktop.gateway.tickets import TICKET_TTL_MS, UiTickets
from moltis_desktop.gateway.webui import CSP, load_assets
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.fake_llm import FakeLLM, Turn, Usage, agent_config

WEB = Path(str(resources.files("moltis_desktop") / "web"))
MAIN = "agent:main:main"


# ----------------------------------------------------------------- assets


async def test_root_serves_the_app_with_a_strict_csp(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(gateway.http + "/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        page = await resp.text()
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts, "the page loads its code"
    for attrs, body in scripts:
        assert 'src="/ui/' in attrs and body.strip() == "", "no inline script"
    assert "style=" not in page and "<style" not in page
    # Everything the page links is served.
    for ref in re.findall(r'(?:href|src)="(/ui/[^"]+)"', page):
        async with http_session.get(gateway.http + ref) as resp:
            assert resp.status == 200, ref


def test_no_network_at_run_time_and_no_bare_imports() -> None:
    """Every module import is a relative path to a file that ships; nothing is fetched
    from another origin (no CDN, no web fonts)."""
    files = {str(p.relative_to(WEB)) for p in WEB.rglob("*") if p.is_file()}
    for path in WEB.rglob("*"):
        if path.suffix not in (".js", ".mjs", ".html", ".css"):
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".js", ".mjs"):
            # Static `import … from "x"` / `import "x"` statements and dynamic `import("x")`.
            specs = re.findall(
                r"""(?:^|[;}\s])import\s*(?:[\w*{][^;"']*?from\s*)?["']([^"']+)["']"""
                r"""|\bimport\(\s*["']([^"']+)["']\s*\)""",
                text,
            )
            for spec in (a or b for a, b in specs):
                assert spec.startswith("."), f"{path.name} imports {spec!r} (bare or remote)"
                target = (path.parent / spec).resolve().relative_to(WEB.resolve())
                assert str(target) in files, f"{path.name} imports {spec}, which does not ship"
        if path.suffix in (".css", ".html"):
            assert not re.search(r"""(?:url\(|href=|src=)\s*["']?https?:""", text), path.name
    assert "js/app.js" in files and "index.html" in files


async def test_assets_are_gzipped_and_revalidated(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    url = gateway.http + "/ui/vendor/purify.mjs"
    raw = (WEB / "vendor" / "purify.mjs").read_bytes()
    async with http_session.get(
        url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.content_type == "text/javascript"
        body = await resp.read()
        etag = resp.headers["ETag"]
    assert gzip.decompress(body) == raw and len(body) < len(raw) / 2
    async with http_session.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert await resp.read() == b""
    for bad in ("/ui/nope.js", "/ui/../pyproject.toml", "/ui/%2e%2e/moltis_desktop/__init__.py"):
        async with http_session.get(gateway.http + bad) as resp:
            assert resp.status == 404, bad


def test_vendored_libraries_are_pinned_hashed_and_licensed() -> None:
    manifest = json.loads((WEB / "vendor" / "vendor.json").read_text(encoding="utf-8"))
    listed = set()
    for item in manifest["files"]:
        path = WEB / "vendor" / item["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"], item["file"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", item["version"]), item
        assert item["license"] and (WEB / "vendor" / item["licenseFile"]).is_file(), item
        listed.add(item["file"])
    shipped = {str(p.relative_to(WEB / "vendor")) for p in (WEB / "vendor").rglob("*.mjs")}
    assert shipped == listed, "every vendored file is in vendor.json"
    assert len(load_assets()) > len(shipped)


# ----------------------------------------------------------------- sign-in tickets


async def test_ticket_is_minted_with_the_token_and_redeemed_once_by_our_page(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(gateway.http + "/ui/auth-mode") as resp:
        assert await resp.json() == {"mode": "token"}
    async with http_session.post(gateway.http + "/ui/ticket") as resp:
        assert resp.status == 401
        assert "Bearer" in (await resp.json())["error"]["message"]
    bearer = {"Authorization": f"Bearer {gateway.token}"}
    async with http_session.post(gateway.http + "/ui/ticket", headers=bearer) as resp:
        assert resp.status == 200
        body = await resp.json()
    ticket = body["ticket"]
    assert body["url"].endswith(f"/#ticket={ticket}") and gateway.token not in body["url"]
    ours = {"Origin": gateway.http}
    async with http_session.post(
        gateway.http + "/ui/redeem",
        json={"ticket": ticket},
        headers={"Origin": "https://evil.example"},
    ) as resp:
        assert resp.status == 403
    async with http_session.post(gateway.http + "/ui/redeem", data=b"{", headers=ours) as resp:
        assert resp.status == 415  # not sent as JSON
    as_json = {**ours, "Content-Type": "application/json"}
    async with http_session.post(gateway.http + "/ui/redeem", data=b"{", headers=as_json) as resp:
        assert resp.status == 400
    async with http_session.post(
        gateway.http + "/ui/redeem", json={"ticket": ticket}, headers=ours
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == {"mode": "token", "auth": {"token": gateway.token}}
    async with http_session.post(
        gateway.http + "/ui/redeem", json={"ticket": ticket}, headers=ours
    ) as resp:
        assert resp.status == 401
        assert "already used" in (await resp.json())["error"]["message"]
    # Neither the token nor the ticket reaches the log.
    log = gateway.log_file.read_text(encoding="utf-8")
    assert gateway.token not in log and ticket not in log


def test_tickets_expire_after_a_minute() -> None:
    clock = ManualClock()
    tickets = UiTickets(clock)
    first, second = tickets.mint(), tickets.mint()
    assert first != second
    clock.advance(TICKET_TTL_MS / 1000 - 1)
    assert tickets.redeem(first)
    clock.advance(2)
    assert not tickets.redeem(second)
    assert not tickets.redeem("made-up")


# ----------------------------------------------------------------- method metadata


async def test_methods_json_describes_every_method_with_a_valid_example(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(gateway.http + "/ui/methods.json") as resp:
        methods = (await resp.json())["methods"]
    assert [m["name"] for m in methods] == gateway.gateway.state.methods_advertised
    by_name = {m["name"]: m for m in methods}
    assert by_name["config.set"]["scope"] == "operator.admin"
    assert by_name["sessions.preview"]["example"] == {"keys": ["…"]}
    checked = 0
    for m in methods:
        if "schema" in m:
            errors = jsonschema.Draft202012Validator(m["schema"]).iter_errors(m["example"])
            # A placeholder cannot know a name's pattern; everything else must hold.
            assert [e.message for e in errors if e.validator != "pattern"] == [], m["name"]
            checked += 1
    assert checked >= 20


# ----------------------------------------------------------------- moltis.secrets.*


async def test_secrets_store_takes_values_and_never_gives_them_back(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway(env={"MOLTIS_SECRETS_PASSPHRASE": "pass-phrase-1"})
    admin = make_client(handle.url)
    await admin.connect(token=handle.token, scopes=["operator.admin"])
    res = await admin.request(
        "moltis.secrets.set",
        {"name": "anthropic-api-key", "value": "sk-ant-secret-value"},
    )
    assert res["payload"] == {"ok": True, "reloaded": True}
    listed = await admin.request("moltis.secrets.list", {})
    names = listed["payload"]["names"]
    assert "anthropic-api-key" in names
    assert "sk-ant-secret-value" not in json.dumps(listed)
    secrets = handle.runtime.secrets
    assert secrets is not None and secrets.get("anthropic-api-key") == "sk-ant-secret-value"
    # The gateway's own credential is not changed from a page that would lock itself out.
    res = await admin.request("moltis.secrets.set", {"name": "gateway-token", "value": "x"})
    assert (
        res["error"]["code"] == "INVALID_REQUEST"
        and "moltis secrets set" in res["error"]["message"]
    )
    res = await admin.request("moltis.secrets.set", {"name": "bad name!", "value": "x"})
    assert res["error"]["code"] == "INVALID_REQUEST"
    res = await admin.request("moltis.secrets.delete", {"name": "anthropic-api-key"})
    assert res["ok"]
    res = await admin.request("moltis.secrets.delete", {"name": "anthropic-api-key"})
    assert "no secret named" in res["error"]["message"]
    reader = make_client(handle.url)
    await reader.connect(token=handle.token, scopes=["operator.read"])
    res = await reader.request("moltis.secrets.list", {})
    assert res["error"]["details"]["missingScope"] == "operator.admin"
    assert "sk-ant-secret-value" not in handle.log_file.read_text(encoding="utf-8")


# ----------------------------------------------------------------- sessions for the sidebar


@pytest.fixture
async def agent_gateway(start_gateway: StartGateway, fake: FakeLLM) -> GatewayHandle:
    prices = '\n[usage.prices."fake/fake-model-1"]\ninput = 3.0\noutput = 15.0\n'
    return await start_gateway(agent_config("openai", fake, prices), env={"FAKE_LLM_KEY": "k"})


async def _send(client, text: str, **extra) -> None:  # type: ignore[no-untyped-def]
    res = await client.request(
        "chat.send", {"sessionKey": MAIN, "message": text, "idempotencyKey": text[:40], **extra}
    )
    assert res["ok"], res
    while True:
        event = await client.next_event("chat")
        if event["payload"]["state"] in ("final", "error", "aborted"):
            return


async def test_sidebar_data_last_message_cost_and_change_events(
    agent_gateway: GatewayHandle, fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.script(Turn(text="a **reply** to remember", usage=Usage(1_000_000, 100_000, 0, 0)))
    client = make_client(agent_gateway.url)
    await client.connect(token=agent_gateway.token, scopes=["operator.admin"])
    await _send(client, "hello")
    listed = (await client.request("sessions.list", {"includeLastMessage": True}))["payload"]
    (main,) = [s for s in listed["sessions"] if s["key"] == MAIN]
    assert main["lastMessagePreview"]["role"] == "assistant"
    assert "reply" in main["lastMessagePreview"]["text"]
    history = (await client.request("chat.history", {"sessionKey": MAIN}))["payload"]
    reply = history["messages"][-1]
    # 1M input at $3/M + 100k output at $15/M.
    assert reply["usage"]["cost"]["total"] == pytest.approx(4.5)
    watcher = make_client(agent_gateway.url)
    await watcher.connect(token=agent_gateway.token, scopes=["operator.read"])
    await client.request("sessions.patch", {"key": MAIN, "label": "Renamed"})
    event = await watcher.next_event("sessions.changed")
    assert event["payload"]["sessionKey"] == MAIN and event["payload"]["reason"] == "patch"
    await client.request("sessions.reset", {"key": MAIN})
    assert (await watcher.next_event("sessions.changed"))["payload"]["reason"] == "reset"
    await client.request("sessions.delete", {"key": MAIN})
    assert (await watcher.next_event("sessions.changed"))["payload"]["reason"] == "delete"


async def test_text_attachments_reach_the_model_and_others_are_refused(
    agent_gateway: GatewayHandle, fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.script(Turn(text="read it"))
    client = make_client(agent_gateway.url)
    await client.connect(token=agent_gateway.token, scopes=["operator.admin"])
    notes = base64.b64encode(b"line 1 of the notes\nline 2").decode()
    await _send(
        client,
        "summarise",
        attachments=[
            {"type": "file", "mimeType": "text/plain", "fileName": "notes.txt", "content": notes}
        ],
    )
    body = [r for r in fake.requests if r.method == "POST"][-1].body
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    text = user if isinstance(user, str) else "".join(p.get("text", "") for p in user)
    assert "summarise\n\nnotes.txt:\n```\nline 1 of the notes\nline 2\n```" in text
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    res = await client.request(
        "chat.send",
        {
            "sessionKey": MAIN,
            "message": "and this",
            "idempotencyKey": "pdf-1",
            "attachments": [{"mimeType": "application/pdf", "fileName": "a.pdf", "content": pdf}],
        },
    )
    assert not res["ok"]
    assert "a.pdf is application/pdf; only images and text files" in res["error"]["message"]
