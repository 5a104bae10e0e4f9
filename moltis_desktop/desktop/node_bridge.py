"""The desktop app as a node of its own gateway (as OpenClaw's menu-bar app is): a
`NodeClient` on the app's loop, over a real WebSocket to the gateway in the same process,
answering `system.notify` with a tray notification and `canvas.*` on the canvas window.

It signs in with the gateway's shared secret (a loopback device is paired silently) and
keeps the device token it is given, in `<state dir>/desktop-node`. It never runs programs
(no `system.run`). Whatever goes wrong is logged; the app keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.node.client import NodeClient
from moltis_desktop.node.commands import SYSTEM_RUN, CommandError
from moltis_desktop.node.errors import NodeAuthError
from moltis_desktop.node.handshake import CLIENT_ID, CLIENT_MODE, ROLE

if TYPE_CHECKING:
    from pathlib import Path

    from moltis_desktop.desktop.canvas import DesktopCanvas
    from moltis_desktop.gateway.auth import SharedSecret
    from moltis_desktop.gateway.nodes import NodeRegistry
    from moltis_desktop.pairing.store import PairingStore

_LOGGER = logging.getLogger(__name__)

STATE_SUBDIR = "desktop-node"
STOP_WAIT_S = 5.0
_NO_AUTH_TOKEN = "moltis-desktop-loopback"  # not a secret: auth mode `none`
"""What the node presents when the gateway asks for no secret (the client needs one)."""
_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG"}


def display_name() -> str:
    return f"Moltis Desktop ({socket.gethostname() or 'this computer'})"


class NodeGateway(Protocol):
    """What the node uses of the app's gateway (its `GatewayState` is one)."""

    @property
    def url(self) -> str: ...
    @property
    def shared_secret(self) -> SharedSecret: ...
    @property
    def tls_fingerprint(self) -> str | None: ...
    @property
    def pairing(self) -> PairingStore: ...
    @property
    def nodes(self) -> NodeRegistry: ...


class NodeHost(Protocol):
    """What the node uses of the app (DesktopApp is one)."""

    @property
    def gateway_state(self) -> NodeGateway | None:
        """The running gateway's state (None before it starts)."""
        ...

    @property
    def state_dir(self) -> Path: ...
    @property
    def notify_replies(self) -> bool:
        """Whether notifications are on (Settings)."""
        ...

    def show_notification(self, title: str, text: str) -> bool:
        """Show a tray notification (and keep it); whether the desktop can show it."""
        ...

    @property
    def canvas(self) -> DesktopCanvas | None:
        """The canvas (made when the gateway starts)."""
        ...


class DesktopNode:
    """The app's own node connection: `start()` once the gateway listens, `stop()` at quit."""

    def __init__(self, host: NodeHost) -> None:
        self.host = host
        self.client: NodeClient | None = None
        self.task: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Connect to the app's gateway (in the background); failures are only logged."""
        gw = self.host.gateway_state
        if gw is None or self.task is not None:
            return
        secret = gw.shared_secret
        token = secret.token or secret.password or _NO_AUTH_TOKEN
        try:
            client = NodeClient(
                self.host.state_dir / STATE_SUBDIR,
                url=gw.url,
                token=token,
                tls_sha256=gw.tls_fingerprint or None,
                display_name=display_name(),
                allow_run=False,
            )
        except (MoltisError, OSError) as exc:
            _LOGGER.error("the desktop node cannot start: %s", exc)
            return
        commands = client.commands
        commands.unregister(SYSTEM_RUN)
        commands.register("system.notify", self.system_notify)
        commands.register("canvas.present", self.canvas_present)
        commands.register("canvas.hide", self.canvas_hide)
        commands.register("canvas.navigate", self.canvas_navigate)
        commands.register("canvas.eval", self.canvas_eval)
        commands.register("canvas.snapshot", self.canvas_snapshot)
        self.client = client
        try:
            self._pair(client)
        except Exception:
            _LOGGER.exception("the desktop node could not be paired with its gateway")
        self.task = asyncio.ensure_future(self._run(client))

    def _pair(self, client: NodeClient) -> None:
        """Pair the app's own node directly (its key is in the app's own state folder): it
        must never wait for approval, even with `auto_approve_loopback_devices` off. A
        surface missing some of its commands (an older app) is forgotten, so the commands
        it declares now are approved at connect."""
        gw = self.host.gateway_state
        assert gw is not None
        store, identity = gw.pairing, client.identity
        reason = store.upgrade_reason(client.node_id, identity.public_key, (ROLE,), ())
        if reason is not None:
            store.approve_directly({
                "deviceId": client.node_id,
                "publicKey": identity.public_key,
                "displayName": client.display_name,
                "platform": client.platform,
                "deviceFamily": client.device_family,
                "clientId": CLIENT_ID,
                "clientMode": CLIENT_MODE,
                "role": ROLE,
                "roles": [ROLE],
                "scopes": [],
                "remoteIp": "127.0.0.1",
            })  # fmt: skip
            _LOGGER.info("the desktop node %s is paired (%s)", client.node_id[:12], reason)
        entry = store.paired.get(client.node_id) or {}
        surface = entry.get("nodeSurface")
        wanted = set(client.commands.names()) & gw.nodes.allowed(client.platform)
        if surface is not None and not wanted <= set(surface.get("commands", [])):
            del entry["nodeSurface"]
            store.save()

    async def _run(self, client: NodeClient) -> None:
        try:
            await client.run()
        except asyncio.CancelledError:
            raise
        except NodeAuthError as exc:
            _LOGGER.warning("the desktop node stopped: %s", exc)
        except Exception:
            _LOGGER.exception("the desktop node stopped")

    async def stop(self) -> None:
        """Disconnect and wait (briefly) for the client to close."""
        client, task = self.client, self.task
        self.client, self.task = None, None
        if client is not None:
            client.stop()
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
        except Exception:  # TimeoutError included
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ system.notify

    async def system_notify(self, params: dict[str, Any]) -> dict[str, Any]:
        """`{title, body?}` → `{ok: true, delivered}`: a tray notification, unless the user
        turned notifications off (Settings) or the desktop shows none."""
        title = str(params.get("title") or "Moltis")[:200]
        body = str(params.get("body") or "")[:1000]
        _LOGGER.info("notification from a node.invoke: %s", title)
        if not self.host.notify_replies:
            return {"ok": True, "delivered": False}
        return {"ok": True, "delivered": self.host.show_notification(title, body)}

    # ------------------------------------------------------------------ canvas.*

    async def _canvas(self) -> DesktopCanvas:
        """The app's canvas."""
        canvas = self.host.canvas
        if canvas is None:
            raise CommandError("UNAVAILABLE", "the canvas is not ready yet")
        return canvas

    async def canvas_present(self, params: dict[str, Any]) -> dict[str, Any]:
        """`{url?}`: show the canvas window (at `url`, else the canvas home) and raise it."""
        canvas = await self._canvas()
        url = params.get("url") or params.get("target")
        if url is None or url == "":
            if canvas.window().url().isEmpty():  # else: show the page it has
                await canvas.present()
        elif isinstance(url, str) and not urlsplit(url).scheme:
            await canvas.present(url)  # a path in the canvas folder
        else:
            await canvas.navigate(_web_url(url, "canvas.present"))
        window = canvas.window()
        window.show()
        window.raise_()
        return {"ok": True}

    async def canvas_hide(self, params: dict[str, Any]) -> dict[str, Any]:
        canvas = self.host.canvas
        if canvas is not None:
            await canvas.hide()
        return {"ok": True}

    async def canvas_navigate(self, params: dict[str, Any]) -> dict[str, Any]:
        """`{url}`: load an http(s) URL (or a path in the canvas folder) in the canvas."""
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise CommandError("INVALID_REQUEST", "canvas.navigate: `url` is required")
        canvas = await self._canvas()
        if urlsplit(url).scheme:
            await canvas.navigate(_web_url(url, "canvas.navigate"))
        else:
            await canvas.present(url)
        return {"ok": True}

    async def canvas_eval(self, params: dict[str, Any]) -> dict[str, Any]:
        """`{javaScript}` → `{result}`: the script's value in the canvas page."""
        script = params.get("javaScript", params.get("script"))
        if not isinstance(script, str) or not script.strip():
            raise CommandError("INVALID_REQUEST", "canvas.eval: `javaScript` is required")
        canvas = await self._canvas()
        try:
            result = await canvas.eval(script)
        except TimeoutError:
            raise CommandError("TIMEOUT", "canvas.eval: the page did not answer") from None
        return {"result": result}

    async def canvas_snapshot(self, params: dict[str, Any]) -> dict[str, Any]:
        """`{format?: png|jpeg, maxWidth?, quality?}` → `{format, base64}` of the canvas."""
        fmt = str(params.get("format") or "png").lower()
        if fmt not in _FORMATS:
            raise CommandError("INVALID_REQUEST", "canvas.snapshot: format is png or jpeg")
        max_width = params.get("maxWidth")
        if max_width is not None and (
            not isinstance(max_width, int) or isinstance(max_width, bool) or max_width <= 0
        ):
            raise CommandError("INVALID_REQUEST", "canvas.snapshot: maxWidth must be positive")
        quality = params.get("quality")
        level = -1
        if isinstance(quality, int | float) and not isinstance(quality, bool):
            level = round(quality * 100) if 0 < quality <= 1 else min(max(int(quality), 0), 100)
        canvas = await self._canvas()
        window = canvas.window()
        if not window.isVisible():
            raise CommandError("UNAVAILABLE", "the canvas is hidden: canvas.present first")
        await asyncio.sleep(0.15)  # let the last paint land
        image = window.grab().toImage()
        if max_width is not None and image.width() > max_width:
            image = image.scaledToWidth(max_width, Qt.TransformationMode.SmoothTransformation)
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, _FORMATS[fmt], level)  # type: ignore[call-overload]  # str works
        buffer.close()
        out = "jpeg" if fmt == "jpg" else fmt
        return {"format": out, "base64": base64.b64encode(bytes(data.data())).decode("ascii")}


def _web_url(url: Any, command: str) -> str:
    """Only web pages go in the canvas (not file:// or other schemes)."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise CommandError("INVALID_REQUEST", f"{command}: `url` must be an http(s) URL")
    return url
