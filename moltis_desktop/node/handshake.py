"""The node's side of the signed handshake: who it says it is (client id, mode, role,
platform), the gateway's `connect.challenge` it answers, and the `connect` params it sends,
signed by the device identity over the challenge's nonce."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import aiohttp

from moltis_desktop import __version__
from moltis_desktop.node.commands import NodeCommands
from moltis_desktop.node.errors import NodeRefusedError, NodeUnreachableError
from moltis_desktop.node.identity import DeviceIdentity

CLIENT_ID = "node-host"
CLIENT_MODE = "node"
ROLE = "node"
CAPS = ("system",)
MIN_PROTOCOL = 3
MAX_PROTOCOL = 4

_PLATFORMS = {"linux": "linux", "darwin": "macos", "win32": "windows", "cygwin": "windows"}
_FAMILIES = {"linux": "Linux", "macos": "Mac", "windows": "Windows"}


def node_platform() -> str:
    """`client.platform`: linux, macos or windows (else `sys.platform` as it is)."""
    for prefix, name in _PLATFORMS.items():
        if sys.platform.startswith(prefix):
            return name
    return sys.platform


def device_family(platform: str) -> str:
    """`client.deviceFamily` for a `node_platform()` value (Linux, Mac, Windows)."""
    return _FAMILIES.get(platform, platform)


async def next_frame(ws: aiohttp.ClientWebSocketResponse, url: str) -> dict[str, Any]:
    """The next frame the gateway sends during the handshake."""
    msg = await ws.receive()
    if msg.type == aiohttp.WSMsgType.TEXT:
        try:
            frame = json.loads(msg.data)
        except ValueError:
            frame = None
        if isinstance(frame, dict):
            return frame
        raise NodeRefusedError("PROTOCOL_ERROR", f"{url} sent a frame that is not JSON")
    reason = f": {msg.extra}" if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else ""
    raise NodeUnreachableError(
        f"the gateway at {url} closed the connection ({ws.close_code}{reason})"
    )


def read_challenge(challenge: dict[str, Any], url: str) -> tuple[str, int]:
    """The nonce of the gateway's `connect.challenge` (its first frame), and when to sign
    it: the challenge's `ts`, else now (ms since the epoch)."""
    payload = challenge.get("payload") or {}
    nonce = payload.get("nonce") if isinstance(payload, dict) else None
    if challenge.get("event") != "connect.challenge" or not isinstance(nonce, str) or not nonce:
        raise NodeRefusedError(
            "PROTOCOL_ERROR",
            f"{url} does not speak the gateway protocol (first frame: {str(challenge)[:120]})",
        )
    ts = payload.get("ts")
    signed_at = ts if isinstance(ts, int) and ts >= 0 else int(time.time() * 1000)
    return nonce, signed_at


def connect_params(
    identity: DeviceIdentity,
    commands: NodeCommands,
    *,
    nonce: str,
    signed_at: int,
    field: str,
    secret: str,
    display_name: str,
    platform: str,
    device_family: str,
    instance_id: str,
) -> dict[str, Any]:
    """The params of `connect` as role `node`, with `secret` in the `auth` field `field`."""
    scopes: list[str] = []
    device = identity.sign_connect(
        nonce=nonce,
        signed_at_ms=signed_at,
        client_id=CLIENT_ID,
        client_mode=CLIENT_MODE,
        role=ROLE,
        scopes=scopes,
        token=secret,
        platform=platform,
        device_family=device_family,
    )
    return {
        "minProtocol": MIN_PROTOCOL,
        "maxProtocol": MAX_PROTOCOL,
        "client": {
            "id": CLIENT_ID,
            "displayName": display_name,
            "version": __version__,
            "platform": platform,
            "deviceFamily": device_family,
            "mode": CLIENT_MODE,
            "instanceId": instance_id,
        },
        "caps": list(CAPS),
        "commands": commands.names(),
        "permissions": {},
        "role": ROLE,
        "scopes": scopes,
        "auth": {field: secret},
        "device": device,
    }
