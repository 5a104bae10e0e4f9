"""HTTP on the gateway's port: probes without auth, CORS (same-origin by default)."""

from __future__ import annotations

import aiohttp

from tests.conftest import GatewayHandle, StartGateway


async def test_healthz_and_readyz_need_no_auth(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(f"{gateway.http}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True, "status": "live"}
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
    async with http_session.get(f"{gateway.http}/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
        assert body["ready"] is True
        assert body["failing"] == []
        assert body["uptimeMs"] >= 0
    async with http_session.head(f"{gateway.http}/health") as resp:
        assert resp.status == 200
    async with http_session.post(f"{gateway.http}/healthz") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, HEAD"


async def test_readyz_is_503_while_stopping(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    gateway.gateway.state.draining = True
    try:
        async with http_session.get(f"{gateway.http}/readyz") as resp:
            assert resp.status == 503
            assert "gateway-draining" in (await resp.json())["failing"]
    finally:
        gateway.gateway.state.draining = False


async def test_cors_is_same_origin_by_default(
    gateway: GatewayHandle, http_session: aiohttp.ClientSession
) -> None:
    foreign = {"Origin": "https://evil.example"}
    async with http_session.get(f"{gateway.http}/healthz", headers=foreign) as resp:
        assert resp.status == 403  # the origin policy applies to every route
        assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = {**foreign, "Access-Control-Request-Method": "GET"}
    async with http_session.options(f"{gateway.http}/healthz", headers=preflight) as resp:
        assert resp.status == 403
    same = {"Origin": gateway.http}
    async with http_session.get(f"{gateway.http}/healthz", headers=same) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == gateway.http


async def test_cors_allowed_origins_from_config(
    start_gateway: StartGateway, http_session: aiohttp.ClientSession
) -> None:
    handle = await start_gateway('[gateway.cors]\nallowed_origins = ["https://app.example"]\n')
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    async with http_session.options(f"{handle.http}/readyz", headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    async with http_session.get(
        f"{handle.http}/readyz", headers={"Origin": "https://app.example"}
    ) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert resp.headers["Vary"] == "Origin"
