"""The gateway server: one aiohttp app on one port (HTTP + WebSocket), embeddable in any loop.

`GatewayServer.start()` binds with `AppRunner` + `TCPSite`, so the headless runtime (uvloop)
and the tray app (qasync) run the very same server on their own loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import uuid
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from moltis_desktop import __version__
from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import Settings
from moltis_desktop.config.store import ConfigSnapshot, ConfigStore
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.gateway.auth import FailedAuthThrottle, PairingRequestLimiter, SharedSecret
from moltis_desktop.gateway.connection import Connection
from moltis_desktop.gateway.dedupe import IdempotencyCache
from moltis_desktop.gateway.loopmonitor import EventLoopMonitor
from moltis_desktop.gateway.nodes import NodeRegistry
from moltis_desktop.gateway.presence import PresenceTracker
from moltis_desktop.gateway.registry import MethodTable, operator_may
from moltis_desktop.gateway.webui import UiTickets
from moltis_desktop.pairing.bootstrap import BootstrapTokens
from moltis_desktop.pairing.store import PairingStore
from moltis_desktop.protocol.constants import CloseCode, Scope
from moltis_desktop.protocol.frames import Raw, encode_event_body, encode_json

if TYPE_CHECKING:
    from moltis_desktop.gateway.chat_events import ChatEventBridge
    from moltis_desktop.gateway.discovery import MdnsAdvertiser
    from moltis_desktop.gateway.services import AgentServices

_LOGGER = logging.getLogger(__name__)

GATEWAY_KEY: web.AppKey[GatewayServer] = web.AppKey("gateway")
EVENTS = (
    "connect.challenge",
    "tick",
    "shutdown",
    "health",
    "presence",
    "config.changed",
    "chat",
    "agent",
    "sessions.changed",
    "device.pair.requested",
    "device.pair.resolved",
    "device.pair.setup.completed",
    "node.pair.requested",
    "node.pair.resolved",
    "node.invoke.request",
    "voicewake.changed",
    "talk.mode",
    "moltis.tts.changed",
    "moltis.voice.state",
    "moltis.voice.models.progress",
)
"""Events this gateway emits (`hello-ok.features.events`)."""
CAPABILITIES = ("published-model-catalog",)
"""Capabilities this gateway declares (`hello-ok.features.capabilities`)."""
_UNGATED_EVENTS = frozenset(
    {"tick", "health", "shutdown", "connect.challenge", "voicewake.changed"}
)
"""Events every connection gets, nodes included (nodes listen for the wake words)."""
_HEALTH_CACHE_S = 1.0
_SYSTEM_EVENT_QUEUE = 20


def resolve_bind(bind: str) -> str:
    """The address to listen on for a `gateway.bind` value."""
    if bind == "loopback":
        return "127.0.0.1"
    if bind == "lan":
        return "0.0.0.0"  # noqa: S104 - binding every interface is what `lan` asks for
    return bind


def builtin_tables() -> list[MethodTable]:
    """The method tables of the gateway's own areas."""
    from moltis_desktop.gateway.methods import (
        catalog,
        chat,
        config,
        devices,
        logs,
        nodes,
        secrets,
        sessions,
        system,
        voice,
        voice_models,
    )

    return [
        system.TABLE,
        logs.TABLE,
        config.TABLE,
        catalog.TABLE,
        chat.TABLE,
        sessions.TABLE,
        secrets.TABLE,
        devices.TABLE,
        nodes.TABLE,
        voice.TABLE,
        voice_models.TABLE,
    ]


class GatewayServer:
    """Owns the listener, the connections, and the state the protocol reports."""

    def __init__(
        self,
        config: ConfigStore,
        *,
        shared_secret: SharedSecret,
        log_file: Path,
        state_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        secrets: SecretStore | None = None,
    ) -> None:
        self.config = config
        self.services: AgentServices | None = None
        """The agent side (chat, models); None until loaded (see `attach_services`)."""
        self.agent_loading = False
        """The agent side is being loaded (its methods answer "retry shortly")."""
        self._chat_bridge: ChatEventBridge | None = None
        self.shared_secret = shared_secret
        self.log_file = log_file
        self.state_dir = state_dir
        self.clock = clock
        self.version = __version__
        self.boot_id = str(uuid.uuid4())
        self.started_mono = clock.monotonic()
        self.registry = MethodTable()
        for table in builtin_tables():
            self.registry.extend(table)
        self.methods_advertised = self.registry.advertised()
        self.connections: set[Connection] = set()
        self.preauth: Counter[str] = Counter()
        self.presence = PresenceTracker(version=self.version, instance_id=self.boot_id, clock=clock)
        self.health_version = 1
        self.dedupe = IdempotencyCache(clock=clock)
        self.listeners: list[Callable[[str, Any], None]] = []
        """In-process observers of every broadcast event (the desktop app's tray and
        notifications); called with (event, payload) and must not block."""
        self._init_pairing(state_dir, clock)
        self.ui_tickets = UiTickets(clock)
        """One-time sign-in tickets for the web app (`/#ticket=…`)."""
        self.secrets: SecretStore | None = secrets
        """The secret store (`moltis.secrets.*`), when the runtime has one."""
        self.auth_throttle, self.browser_throttle = self._throttles(self.settings)
        self.loop_monitor = EventLoopMonitor()
        self.system_events: deque[str] = deque(maxlen=_SYSTEM_EVENT_QUEUE)
        self.ready = False
        self.draining = False
        self.port = 0
        self.host = ""
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health_raw: Raw | None = None
        self._health_snapshot_raw: Raw | None = None
        self._health_at = -1e9
        self._rebind_handle: asyncio.TimerHandle | None = None
        self._init_extras()
        self.config_lock = asyncio.Lock()
        """Serialises config writes made through the protocol."""
        config.subscribe(self._on_config_changed)

    def _init_extras(self) -> None:
        """TLS, mDNS and voice: set up by `start` and by the runtime."""
        self.tls_fingerprint: str | None = None
        """SHA-256 of the TLS certificate served (lowercase hex, no colons); None without TLS."""
        self._ssl_context: ssl.SSLContext | None = None
        self.mdns: MdnsAdvertiser | None = None
        """Advertises the gateway on mDNS, from `start` to `stop` (MOLTIS_DISABLE_MDNS=1 or
        OPENCLAW_DISABLE_BONJOUR=1 in the environment turns it off)."""
        self.voice: Any = None
        """The voice service (`voice.service.VoiceService`): speech, transcription, the talk
        loop; set by the runtime. None in a gateway built without it."""
        self.voice_models: Any = None
        """The voice model manager (`voice.models.ModelManager`); set by the runtime."""

    def _init_pairing(self, state_dir: Path, clock: Clock) -> None:
        self.pairing = PairingStore(state_dir, clock)
        """Paired devices, pending requests and device tokens."""
        self.bootstrap = BootstrapTokens(state_dir, clock)
        """Setup codes' bootstrap tokens (`device.pair.setupCode`)."""
        self.pairing_requests = PairingRequestLimiter(
            lambda: self.settings.gateway.max_pairing_requests_per_minute, clock
        )
        self.nodes = NodeRegistry(self)
        """Connected nodes, and the `node.invoke` calls waiting for them."""

    # ------------------------------------------------------------------ state

    @property
    def chat_bridge(self) -> ChatEventBridge:
        """Maps agent events to `chat` / `agent` frames."""
        if self._chat_bridge is None:
            from moltis_desktop.gateway.chat_events import ChatEventBridge

            self._chat_bridge = ChatEventBridge(self)
        return self._chat_bridge

    def attach_services(self, services: AgentServices) -> None:
        """Plug in the agent side (the runtime loads it after the gateway is listening)."""
        self.services = services
        self.agent_loading = False
        services.chat.default_sink = self.chat_bridge
        self.invalidate_health()

    @property
    def settings(self) -> Settings:
        """The current (last good) settings."""
        return self.config.current.settings

    def uptime_ms(self) -> int:
        return int((self.clock.monotonic() - self.started_mono) * 1000)

    @property
    def url(self) -> str:
        """The WebSocket URL clients on this machine use (`wss://` with TLS)."""
        return f"{'wss' if self.tls_fingerprint else 'ws'}://{self._authority}"

    @property
    def http_url(self) -> str:
        """The HTTP origin of the web app and the HTTP endpoints (`https://` with TLS)."""
        return f"{'https' if self.tls_fingerprint else 'http'}://{self._authority}"

    @property
    def _authority(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def _throttles(self, settings: Settings) -> tuple[FailedAuthThrottle, FailedAuthThrottle]:
        auth = settings.gateway.auth
        common: dict[str, Any] = {
            "max_failures": auth.max_failures,
            "window_s": auth.failure_window_s,
            "lockout_s": auth.lockout_s,
            "clock": self.clock,
        }
        return (
            FailedAuthThrottle(exempt_loopback=auth.exempt_loopback, **common),
            FailedAuthThrottle(exempt_loopback=False, **common),
        )

    def state_version(self) -> dict[str, int]:
        return {"presence": self.presence.version, "health": self.health_version}

    # ------------------------------------------------------------------ health

    def _health_cache(self, fresh: bool) -> tuple[Raw, Raw]:
        now = self.clock.monotonic()
        if fresh or self._health_raw is None or now - self._health_at > _HEALTH_CACHE_S:
            from moltis_desktop.gateway.methods.system import build_health

            payload = build_health(self)
            self._health_raw = Raw(encode_json(payload))
            payload.pop("config")
            self._health_snapshot_raw = Raw(encode_json(payload))
            self._health_at = now
        assert self._health_snapshot_raw is not None
        return self._health_raw, self._health_snapshot_raw

    def health_raw(self, *, fresh: bool = False) -> Raw:
        """The encoded `health` RPC payload, rebuilt at most once a second (now if `fresh`)."""
        return self._health_cache(fresh)[0]

    def health_snapshot_raw(self) -> Raw:
        """The encoded schema-exact health snapshot (for `hello-ok`), cached like `health`."""
        return self._health_cache(False)[1]

    def invalidate_health(self) -> None:
        """Make the next `health` rebuild its payload."""
        self._health_raw = None

    # ------------------------------------------------------------------ lifecycle

    def build_app(self) -> web.Application:
        from moltis_desktop.gateway.http import add_routes, cors_middleware

        app = web.Application(middlewares=[cors_middleware], client_max_size=1024**2)
        app[GATEWAY_KEY] = self
        add_routes(app)
        return app

    async def start(self) -> None:
        """Bind the listener and start the background work (ticks, health, config watch)."""
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await self._bind()
        self.loop_monitor.start()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="gateway-tick"),
            asyncio.create_task(self._health_loop(), name="gateway-health"),
            asyncio.create_task(self.config.watch(), name="config-watch"),
        ]
        self.ready = True
        _LOGGER.info("gateway listening on %s", self.url)
        _LOGGER.info("web app: %s/ (`moltis dashboard` opens it signed in)", self.http_url)
        from moltis_desktop.gateway.discovery import MdnsAdvertiser

        self.mdns = MdnsAdvertiser(version=self.version, env=os.environ)
        self._advertise(self.settings)

    async def _bind(self, port: int | None = None) -> None:
        """Listen where the settings say (on `port` instead of theirs when given)."""
        gw = self.settings.gateway
        context, fingerprint = await self._tls_context() if gw.tls.enabled else (None, None)
        await self._listen(resolve_bind(gw.bind), gw.port if port is None else port, context)
        self._ssl_context, self.tls_fingerprint = context, fingerprint

    async def _tls_context(self) -> tuple[ssl.SSLContext, str]:
        from moltis_desktop.core.errors import MoltisError
        from moltis_desktop.gateway.tls import load_or_create_certificate, ssl_context

        try:
            material = await asyncio.to_thread(load_or_create_certificate, self.state_dir)
            return ssl_context(material), material.fingerprint_sha256
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MoltisError(
                f"cannot serve TLS: {exc}. Check that {self.state_dir / 'tls'} is writable "
                "(delete it to make a new certificate), or set gateway.tls.enabled = false"
            ) from None

    async def _listen(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        assert self._runner is not None
        site = web.TCPSite(
            self._runner, host, port, backlog=1024, reuse_address=True, ssl_context=context
        )
        try:
            await site.start()
        except OSError as exc:
            from moltis_desktop.core.errors import MoltisError

            raise MoltisError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}. Is another gateway "
                f"running? Pick another port with `moltis gateway --port N` or gateway.port"
            ) from None
        self._site = site
        server = site._server  # the asyncio Server; its socket tells the real port
        sockets = getattr(server, "sockets", None) or ()
        self.host, self.port = host, (sockets[0].getsockname()[1] if sockets else port)

    async def rebind(self) -> None:
        """Move the listener to the current bind/port/TLS (connections already open stay)."""
        old = self._site
        gw = self.settings.gateway
        here = resolve_bind(gw.bind) == self.host and gw.port in (0, self.port)
        if old is None or not here:
            try:
                await self._bind()
            except Exception:
                if old is None or gw.port not in (0, self.port):
                    raise
                # The same port on an overlapping address (127.0.0.1 -> 0.0.0.0): the old
                # listener holds it, so free it first (and go back to it on failure).
                previous_host, previous = self.host, self._ssl_context
                await old.stop()
                try:
                    await self._bind(self.port)
                except Exception:
                    await self._listen(previous_host, self.port, previous)
                    raise
                old = None
            if old is not None:
                await old.stop()
        else:
            # Same address (only TLS changed): free the port first. Port 0 keeps the port
            # in use rather than moving to a new random one.
            previous = self._ssl_context
            await old.stop()
            try:
                await self._bind(self.port)
            except Exception:
                await self._listen(self.host, self.port, previous)
                raise
        _LOGGER.info("gateway now listening on %s", self.url)
        self._advertise(self.settings)

    def _advertise(self, settings: Settings) -> None:
        """Bring the mDNS records in line with `settings` and the listener (in the background)."""
        if self.mdns is not None:
            self.mdns.update(
                settings, bind_host=self.host, port=self.port, tls_sha256=self.tls_fingerprint
            )

    def schedule_rebind(self, delay_s: float) -> None:
        """Rebind the listener after `delay_s` (a later call replaces an earlier one)."""
        if self._rebind_handle is not None:
            self._rebind_handle.cancel()
        loop = asyncio.get_running_loop()

        def start() -> None:
            self._rebind_handle = None
            task = loop.create_task(self._rebind_logged())
            self._tasks.append(task)

        self._rebind_handle = loop.call_later(delay_s, start)

    async def _rebind_logged(self) -> None:
        try:
            await self.rebind()
        except Exception as exc:
            _LOGGER.error("cannot move the listener, staying on %s: %s", self.url, exc)

    async def stop(
        self, reason: str = "gateway stopping", restart_expected_ms: int | None = None
    ) -> None:
        """Tell clients (`shutdown`), close them with 1012, and release the port."""
        if self._runner is None:
            return
        self.ready = False
        self.draining = True
        payload: dict[str, Any] = {"reason": reason}
        if restart_expected_ms is not None:
            payload["restartExpectedMs"] = restart_expected_ms
        self.broadcast("shutdown", payload)
        await asyncio.gather(
            *(
                c.close(CloseCode.SERVICE_RESTART, "service restart")
                for c in list(self.connections)
            ),
            return_exceptions=True,
        )
        if self._rebind_handle is not None:
            self._rebind_handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.loop_monitor.stop()
        if self.mdns is not None:
            await self.mdns.close()
            self.mdns = None
        await self._runner.cleanup()
        self._runner = None
        _LOGGER.info("gateway stopped")

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway.tick_interval_ms / 1000)
            self._guarded(lambda: self.broadcast("tick", {"ts": self.clock.now_ms()}), "tick")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway.health_refresh_ms / 1000)
            self._guarded(self.publish_health, "health refresh")

    @staticmethod
    def _guarded(step: Callable[[], object], what: str) -> None:
        # A failing step must not end the loop that runs it (and with it ticks or health).
        try:
            step()
        except Exception:
            _LOGGER.exception("%s failed; trying again next interval", what)

    def publish_health(self) -> None:
        """Rebuild the health snapshot and push it as a `health` event."""
        self.health_version += 1
        from moltis_desktop.gateway.methods.system import build_health

        self.broadcast("health", build_health(self, snapshot=True), state_version=True)

    def _on_config_changed(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        self.auth_throttle, self.browser_throttle = self._throttles(new.settings)
        self.invalidate_health()
        self.broadcast(
            "config.changed",
            {"path": str(new.path), "hash": new.hash, "ts": self.clock.now_ms()},
            scope=Scope.READ,
        )
        for conn in self.connections:
            conn.max_buffered = new.settings.gateway.max_buffered_bytes
            conn.max_payload = new.settings.gateway.max_payload
        if self._runner is not None and self.config.restart_keys(old.settings, new.settings):
            self.schedule_rebind(0.0)
        if old.settings.discovery != new.settings.discovery:
            self._advertise(new.settings)

    # ------------------------------------------------------------------ events

    def broadcast(
        self,
        event: str,
        payload: Any = None,
        *,
        droppable: bool = False,
        scope: str | None = None,
        state_version: bool = False,
    ) -> int:
        """Send an event to every connection allowed to see it; returns how many got it.

        The frame is encoded once; each connection adds its own `seq`. Events other than
        tick/health/shutdown need read scope (`scope`), and reach operators only.
        """
        for listener in self.listeners:
            try:
                listener(event, payload)
            except Exception:  # an observer's bug must not break the broadcast
                _LOGGER.exception("event listener failed on %s", event)
        body = encode_event_body(event, payload, self.state_version() if state_version else None)
        needed = scope if scope is not None else (None if event in _UNGATED_EVENTS else Scope.READ)
        sent = 0
        for conn in self.connections:
            if needed is not None and not operator_may(conn.role, conn.scopes, needed):
                continue
            if conn.send_event(body, droppable=droppable):
                sent += 1
        return sent

    def broadcast_presence(self) -> None:
        """Push the presence list (a droppable event, with `stateVersion`)."""
        self.broadcast(
            "presence",
            {"presence": self.presence.entries()},
            droppable=True,
            scope=Scope.READ,
            state_version=True,
        )
