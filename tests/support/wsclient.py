"""A real WebSocket client of the gateway for tests; every frame it receives is validated
against OpenClaw's published schema."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import aiohttp

from tests.support.schema import FrameValidator

TIMEOUT = 10.0
"""Seconds any single wait may take in a test."""


class ConnectionClosed(Exception):
    """The gateway closed the socket."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class ProtoClient:
    """One protocol connection, driven step by step by a test."""

    def __init__(self, session: aiohttp.ClientSession, url: str, validator: FrameValidator) -> None:
        self.session = session
        self.url = url
        self.validator = validator
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.challenge: dict[str, Any] = {}
        self.hello: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._methods: dict[str, str] = {}
        self._ids = itertools.count(1)

    async def open(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Open the socket and read the challenge."""
        self.ws = await asyncio.wait_for(
            self.session.ws_connect(
                self.url,
                headers=headers,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            ),
            TIMEOUT,
        )
        self.challenge = await self.recv()
        assert self.challenge["event"] == "connect.challenge"
        assert "seq" not in self.challenge
        return self.challenge

    def connect_params(
        self,
        *,
        token: str | None = None,
        password: str | None = None,
        scopes: list[str] | None = None,
        client_id: str = "cli",
        mode: str = "cli",
        role: str = "operator",
        min_protocol: int = 4,
        max_protocol: int = 4,
        client: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        auth: dict[str, str] = {}
        if token is not None:
            auth["token"] = token
        if password is not None:
            auth["password"] = password
        params: dict[str, Any] = {
            "minProtocol": min_protocol,
            "maxProtocol": max_protocol,
            "client": {
                "id": client_id,
                "version": "test",
                "platform": "linux",
                "deviceFamily": "Linux",
                "mode": mode,
                "instanceId": str(uuid.uuid4()),
                **(client or {}),
            },
            "caps": [],
            "auth": auth,
            "role": role,
            "scopes": ["operator.read"] if scopes is None else scopes,
        }
        params.update(extra)
        return params

    async def connect(self, **kwargs: Any) -> dict[str, Any]:
        """Open (if needed) and send `connect`; returns the whole `res` frame."""
        if self.ws is None:
            await self.open()
        res = await self.request("connect", self.connect_params(**kwargs))
        if res["ok"]:
            self.hello = res["payload"]
        return res

    async def connect_signed(
        self, key: Any, *, secret: str, device_change: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Open, then `connect` as a device whose key signs the challenge (what OpenClaw's
        apps and node host do). `secret` is the token the signature covers (the shared
        token, a device token or a bootstrap token); the rest are `connect` params (`token=`,
        `auth=`, `role=`, `scopes=`, `client_id=`, `mode=`, …). `device_change` overrides
        fields of the signed block, to forge one."""
        from tests.support.devices import signed_device

        challenge = (await self.open())["payload"]
        device = signed_device(
            key,
            nonce=challenge["nonce"],
            ts=challenge["ts"],
            token=secret,
            scopes=kwargs.get("scopes", ["operator.read"]),
            role=kwargs.get("role", "operator"),
            client_id=kwargs.get("client_id", "cli"),
            mode=kwargs.get("mode", "cli"),
        )
        device.update(device_change or {})
        return await self.connect(device=device, **kwargs)

    async def send_json(self, frame: Any) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(frame))

    async def send_request(
        self, method: str, params: Any = None, request_id: str | None = None
    ) -> str:
        rid = request_id or f"{next(self._ids)}:{uuid.uuid4().hex[:8]}"
        frame: dict[str, Any] = {"type": "req", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        self._methods[rid] = method
        await self.send_json(frame)
        return rid

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame (validated); raises `ConnectionClosed` when the socket closes."""
        assert self.ws is not None
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            # The code in the close frame itself: `ws.close_code` may already read 1006 when
            # the server dropped the TCP connection right after its close frame.
            code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
            raise ConnectionClosed(code, str(msg.extra or ""))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame: dict[str, Any] = json.loads(msg.data)
        method = self._methods.get(frame.get("id", "")) if frame.get("type") == "res" else None
        self.validator.frame(frame, method)
        if frame.get("type") == "event":
            self.events.append(frame)
        return frame

    async def response(self, request_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Frames until the `res` for `request_id` (events are kept in `events`)."""
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == "res" and frame.get("id") == request_id:
                return frame

    async def request(self, method: str, params: Any = None) -> dict[str, Any]:
        return await self.response(await self.send_request(method, params))

    async def call(self, method: str, params: Any = None) -> Any:
        """The payload of a successful request (fails the test otherwise)."""
        res = await self.request(method, params)
        assert res["ok"], res
        return res["payload"]

    async def next_event(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        for i, frame in enumerate(self.events):
            if frame["event"] == name:
                return self.events.pop(i)
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == "event" and frame["event"] == name:
                self.events.remove(frame)
                return frame

    async def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Read until the gateway closes; returns (code, reason)."""
        while True:
            try:
                await self.recv(timeout)
            except ConnectionClosed as closed:
                return closed.code, closed.reason

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
