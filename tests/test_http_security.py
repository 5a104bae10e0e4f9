"""The HTTP security layer (docs/SECURITY.md): one policy for every route and the WebSocket.

Each test is a finding of the security review, driven over real sockets against a running
gateway; it failed on the code before the fix.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from moltis_desktop.config.loader import ConfigError
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.gateway.policy import Access, access_of
from moltis_desktop.gateway.trust import client_address
from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.devices import device_id
from tests.support.fake_llm import FakeLLM, Turn, agent_config

NONE_AUTH = '[gateway.auth]\nmode = "none"\n'


async def open_gateway(start_gateway: StartGateway, fake: FakeLLM) -> GatewayHandle:
    """Auth mode `none` with the OpenAI endpoint on: the review's worst case."""
    return await start_gateway(
        NONE_AUTH + agent_config("openai", fake),
        token=None,
        env={"FAKE_LLM_KEY": "fake-key-0123456789"},
        overrides={"gateway": {"chat_completions": True}},
    )


def completion(text: str = "hi") -> dict[str, Any]:
    return {"model": "moltis:main", "messages": [{"role": "user", "content": text}]}


# ----------------------------------------------------------------- 1. CSRF and rebinding


async def test_a_foreign_page_cannot_drive_the_agent(
    start_gateway: StartGateway, fake: FakeLLM, http_session: aiohttp.ClientSession
) -> None:
    handle = await open_gateway(start_gateway, fake)
    url = f"{handle.http}/v1/chat/completions"
    import json

    body = json.dumps(completion()).encode()
    # The "simple" cross-origin POST a page can send without a preflight.
    plain = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    async with http_session.post(url, data=body, headers=plain) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "origin_not_allowed"
    # DNS rebinding: the page's name now resolves to 127.0.0.1, Host and Origin agree.
    port = handle.gateway.state.port
    rebound = {
        "Host": f"evil.example:{port}",
        "Origin": f"http://evil.example:{port}",
        "x-moltis-session-key": "agent:main:main",
    }
    async with http_session.post(url, json=completion(), headers=rebound) as resp:
        assert resp.status == 421
    # Same origin but not JSON: refused before any work.
    ours = {"Origin": handle.http, "Content-Type": "text/plain"}
    async with http_session.post(url, data=body, headers=ours) as resp:
        assert resp.status == 415
    assert fake.requests == []  # no turn ran
    # The owner's own tools on this machine still work.
    fake.script(Turn(text="hello owner"))
    async with http_session.post(url, json=completion()) as resp:
        assert resp.status == 200
        assert (await resp.json())["choices"][0]["message"]["content"] == "hello owner"


async def test_host_allowlist_applies_to_every_route_and_the_websocket(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession, make_client: MakeClient
) -> None:
    port = gateway.gateway.state.port
    for path in ("/", "/healthz", "/ui/auth-mode", "/ui/index.html", "/v1/models"):
        async with http_session.get(
            gateway.http + path, headers={"Host": f"rebind.attacker.example:{port}"}
        ) as resp:
            assert resp.status == 421, path
            assert "gateway.allowed_hosts" in (await resp.json())["error"]["message"]
    for host in (
        "127.0.0.1",
        "localhost",
        "[::1]",
        "192.168.1.20",
        "mybox.local",
        "a.ts.net",
        "laptop.lan",
        "laptop.home.arpa",
    ):
        async with http_session.get(
            gateway.http + "/healthz", headers={"Host": f"{host}:{port}"}
        ) as resp:
            assert resp.status == 200, host
    # The WebSocket upgrade is refused the same way, before any frame.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http_session.ws_connect(gateway.url, headers={"Host": "evil.example"})
    assert refused.value.status == 421


async def test_allowed_hosts_from_config(
    start_gateway: StartGateway, http_session: aiohttp.ClientSession
) -> None:
    handle = await start_gateway('[gateway]\nallowed_hosts = ["gw.example.org", ".example.net"]\n')
    for host, status in (
        ("gw.example.org", 200),
        ("box.example.net", 200),
        ("example.org", 421),
        ("8.8.8.8", 421),  # a public address that is not this machine's
    ):
        async with http_session.get(handle.http + "/healthz", headers={"Host": host}) as resp:
            assert resp.status == status, host


# ------------------------------------------------------------- 2. throttled Bearer checks


async def test_every_bearer_check_shares_the_throttle(
    start_gateway: StartGateway, http_session: aiohttp.ClientSession, make_client: MakeClient
) -> None:
    handle = await start_gateway(
        overrides={
            "gateway": {
                "chat_completions": True,
                "auth": {"exempt_loopback": False, "max_failures": 5, "lockout_s": 60},
            }
        }
    )
    # Locked out on the WebSocket...
    for _ in range(5):
        client = make_client(handle.url)
        res = await client.connect(token="wrong-token-123456")
        assert not res["ok"]
        await client.close()
    # ... is locked out on /ui/ticket, even with the right token: no comparison is made.
    right = {"Authorization": f"Bearer {handle.token}"}
    async with http_session.post(handle.http + "/ui/ticket", headers=right) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0
    async with http_session.get(handle.http + "/v1/models", headers=right) as resp:
        assert resp.status == 429


async def test_guesses_per_second_are_bounded_on_loopback(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    """The review measured ~4,000 guesses/s on /ui/ticket. Loopback is exempt from the long
    lockout, yet a parallel burst gets a handful of comparisons, then 429s."""
    compared = 0
    refused = 0

    async def guess(i: int) -> None:
        nonlocal compared, refused
        headers = {"Authorization": f"Bearer wrong-guess-{i:06d}"}
        async with http_session.post(gateway.http + "/ui/ticket", headers=headers) as resp:
            if resp.status == 401:
                compared += 1
            elif resp.status == 429:
                refused += 1

    started = time.monotonic()
    await asyncio.gather(*(guess(i) for i in range(200)))
    elapsed = time.monotonic() - started
    assert compared + refused == 200
    # 10 failures lock loopback for 5 s: at most ~10 comparisons in this burst.
    assert compared <= 12, compared
    assert compared / max(elapsed, 1.0) < 20
    # /readyz compares nothing, so it cannot be used instead: the same body either way.
    bodies = set()
    for auth in (f"Bearer {gateway.token}", "Bearer wrong-guess-000000"):
        async with http_session.get(
            gateway.http + "/readyz", headers={"Authorization": auth, "X-Forwarded-For": "1.2.3.4"}
        ) as resp:
            bodies.add(await resp.read())
    assert len(bodies) == 1


# ------------------------------------------------------------------------ 7. "local"


def test_client_address_trusts_forwarding_headers_from_declared_proxies_only() -> None:
    xff = {"X-Forwarded-For": "203.0.113.9"}
    assert client_address("127.0.0.1", {}, ()) == ("127.0.0.1", True)
    assert client_address("127.0.0.1", xff, ()) == ("127.0.0.1", False)
    assert client_address("127.0.0.1", xff, ("127.0.0.1",)) == ("203.0.113.9", False)
    chain = {"X-Forwarded-For": "127.0.0.1, 10.0.0.5"}
    assert client_address("127.0.0.1", chain, ("127.0.0.0/8", "10.0.0.0/8")) == (
        "127.0.0.1",
        True,
    )
    assert client_address(
        "127.0.0.1", {"Forwarded": 'for="[2001:db8::1]:443"'}, ("::1", "127.0.0.1")
    ) == (
        "2001:db8::1",
        False,
    )
    assert client_address("10.0.0.2", {"X-Real-IP": "127.0.0.1"}, ()) == ("10.0.0.2", False)


async def test_a_client_behind_a_local_proxy_is_not_local(
    start_gateway: StartGateway, make_client: MakeClient, http_session: aiohttp.ClientSession
) -> None:
    """Behind Tailscale Serve or Caddy (a loopback peer adding X-Forwarded-For), auth mode
    `none` used to give a remote client admin over the WebSocket."""
    handle = await start_gateway(NONE_AUTH, token=None)
    proxied = {"X-Forwarded-For": "100.101.102.103"}
    client = make_client(handle.url)
    await client.open(headers=proxied)
    res = await client.connect(scopes=["operator.admin"])
    assert not res["ok"]
    await client.close()
    async with http_session.post(handle.http + "/ui/ticket", headers=proxied) as resp:
        assert resp.status == 401
    async with http_session.get(handle.http + "/readyz", headers=proxied) as resp:
        assert set(await resp.json()) == {"ready"}
    # Declared as a trusted proxy, the forwarded loopback client is local again.
    handle2 = await start_gateway(
        NONE_AUTH + '[gateway]\ntrusted_proxies = ["127.0.0.1"]\n', token=None
    )
    local = {"X-Forwarded-For": "127.0.0.1"}
    async with http_session.post(handle2.http + "/ui/ticket", headers=local) as resp:
        assert resp.status == 200
    async with http_session.post(handle2.http + "/ui/ticket", headers=proxied) as resp:
        assert resp.status == 401


async def test_a_token_mode_device_behind_a_proxy_is_not_paired_silently(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    handle = await start_gateway()
    key = Ed25519PrivateKey.generate()
    client = make_client(handle.url)
    original_open = client.open
    client.open = lambda headers=None: original_open(  # type: ignore[method-assign]
        headers={"X-Forwarded-For": "100.101.102.103"}
    )
    res = await client.connect_signed(
        key, secret=handle.token, token=handle.token, scopes=["operator.admin"]
    )
    assert not res["ok"]
    assert res["error"]["code"] == "NOT_PAIRED", res
    await client.close()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    import base64

    b64 = base64.urlsafe_b64encode(public).decode().rstrip("=")
    pairing = handle.gateway.state.pairing
    assert not pairing.is_paired(device_id(key), b64, "operator", ("operator.admin",))
    assert pairing.has_pending(device_id(key), "operator")


# ------------------------------------------------------------------------- 11. info


async def test_head_of_the_root_is_answered(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.head(gateway.http + "/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")


async def test_a_legacy_v1_signature_is_accepted_once(
    gateway: GatewayHandle, make_client: MakeClient
) -> None:
    """A v1 signature (no nonce, loopback only) names no connection; a captured one could
    be replayed within the skew window. Now each is used once."""
    import base64

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ident = device_id(key)
    signed_at = int(time.time() * 1000)
    payload = "|".join(
        ["v1", ident, "cli", "cli", "operator", "operator.read", str(signed_at), gateway.token]
    )
    device = {
        "id": ident,
        "publicKey": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "signature": base64.urlsafe_b64encode(key.sign(payload.encode())).decode().rstrip("="),
        "signedAt": signed_at,
    }
    first = make_client(gateway.url)
    res = await first.connect(token=gateway.token, device=device)
    assert res["ok"], res
    await first.close()
    replay = make_client(gateway.url)
    res = await replay.connect(token=gateway.token, device=device)
    assert not res["ok"]
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_SIGNATURE_REPLAYED"
    await replay.close()


# ---------------------------------------------------------------- the policy, per route


async def test_every_route_declares_its_policy(gateway: GatewayHandle) -> None:
    app = gateway.gateway._runner.app  # type: ignore[union-attr]
    missing = []
    seen: dict[str, Access] = {}
    for route in app.router.routes():
        access = access_of(route.handler)
        info = route.resource.canonical if route.resource is not None else "?"
        if access is None:
            missing.append(f"{route.method} {info}")
        else:
            seen[f"{route.method} {info}"] = access
    assert missing == [], f"routes without a declared policy: {missing}"
    assert seen["POST /v1/chat/completions"] is Access.TOKEN
    assert seen["POST /ui/ticket"] is Access.TOKEN
    assert seen["POST /ui/redeem"] is Access.APP
    assert seen["* /healthz"] is Access.PUBLIC


async def test_a_route_without_a_policy_is_refused(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    """Fail closed: a handler added around `policy.add_route` is never served."""
    from moltis_desktop.gateway.http_security import security_middleware

    async def leaky(request: web.Request) -> web.Response:
        return web.Response(text="secret")

    app = web.Application(middlewares=[security_middleware])
    from moltis_desktop.gateway.state import STATE_KEY

    app[STATE_KEY] = gateway.gateway.state
    app.router.add_get("/leaky", leaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with http_session.get(f"http://127.0.0.1:{port}/leaky") as resp:
            assert resp.status == 500
            assert "secret" not in await resp.text()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trusted_proxies", '["10.0.0.0/33"]'),
        ("trusted_proxies", '["caddy"]'),
        ("allowed_hosts", '["https://gw.example.org"]'),
        ("allowed_hosts", '["gw.example.org:8443"]'),
    ],
)
def test_bad_proxy_and_host_settings_are_refused_with_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    path = tmp_path / "moltis.toml"
    path.write_text("[gateway]\n")
    store = ConfigStore(path, env={})
    with pytest.raises(ConfigError, match=rf"gateway\.{key}"):
        store.write_raw(f"[gateway]\n{key} = {value}\n", store.current.hash)
    store.write_raw(
        '[gateway]\ntrusted_proxies = ["127.0.0.1", "fd00::/8"]\n'
        'allowed_hosts = ["gw.example.org", ".home.arpa", "2001:db8::5"]\n',
        store.current.hash,
    )
    assert store.current.settings.gateway.trusted_proxies == ("127.0.0.1", "fd00::/8")


async def test_malformed_host_and_forwarding_headers_fail_closed(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    """Forged inputs: a Host that is not a host, forwarding chains that do not parse."""
    port = gateway.gateway.state.port
    for host in ("[::1", "::1", "a b.local", "user@127.0.0.1", "127.0.0.1/x", ".", ":80"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), 5)).split()[1]
        writer.close()
        assert status in (b"400", b"421"), (host, status)
    # From a trusted proxy, a chain with a hop that is not an address is not local.
    proxies = ("127.0.0.1",)
    for chain in ("unknown", "127.0.0.1, garbage", "", "[::1"):
        assert client_address("127.0.0.1", {"X-Forwarded-For": chain}, proxies)[1] is False, chain
    assert client_address("127.0.0.1", {"Forwarded": "for=_hidden"}, proxies)[1] is False
    # The gateway still answers normally afterwards.
    async with http_session.get(gateway.http + "/healthz") as resp:
        assert resp.status == 200
