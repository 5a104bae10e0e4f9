"""The gateway server's life cycle: one aiohttp app on one port (HTTP + WebSocket),
embeddable in any loop.

`GatewayServer.start()` binds with `AppRunner` + `TCPSite`, so the headless runtime (uvloop)
and the tray app (qasync) run the very same server on their own loops. What handlers share
lives in `state.py`; nothing in `gateway/` imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import Settings
from moltis_desktop.config.store import ConfigSnapshot, ConfigStore
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.keys import ServiceMap
from moltis_desktop.gateway.auth import SharedSecret
from moltis_desktop.gateway.http_security import security_middleware
from moltis_desktop.gateway.limits import (
    ConnectionLimits,
    GuardedAppRunner,
    connection_caps,
    raise_fd_limit,
)
from moltis_desktop.gateway.methods import method_table
from moltis_desktop.gateway.owner_socket import OwnerSocket, OwnerSocketBusyError, bind_owner_socket
from moltis_desktop.gateway.routes import add_routes
from moltis_desktop.gateway.state import STATE_KEY, GatewayState, resolve_bind, throttles
from moltis_desktop.gateway.voice_events import publish_voice_event
from moltis_desktop.protocol.constants import CloseCode, Scope

if TYPE_CHECKING:
    from moltis_desktop.gateway.discovery import MdnsAdvertiser
    from moltis_desktop.gateway.services import AgentServices
    from moltis_desktop.providers.local_catalog import LocalModelManager
    from moltis_desktop.voice.models import ModelManager
    from moltis_desktop.voice.service import VoiceService

_LOGGER = logging.getLogger(__name__)


class GatewayServer:
    """Starts and stops the listener and the gateway's background work."""

    def __init__(
        self,
        config: ConfigStore,
        *,
        shared_secret: SharedSecret,
        log_file: Path,
        state_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        secrets: SecretStore | None = None,
        voice: VoiceService | None = None,
        voice_models: ModelManager | None = None,
        local_models: LocalModelManager | None = None,
        services: ServiceMap | None = None,
        owner_socket: Path | None = None,
    ) -> None:
        self.owner_socket_path = owner_socket
        """Where to listen for the owner's own processes (`owner_socket.py`); None: no
        socket (Windows, or a caller that wants TCP only)."""
        self._owner_socket: OwnerSocket | None = None
        self.state = GatewayState(
            config,
            methods=method_table(),
            shared_secret=shared_secret,
            log_file=log_file,
            state_dir=state_dir,
            clock=clock,
            secrets=secrets,
            voice=voice,
            voice_models=voice_models,
            local_models=local_models,
            services=services,
            rebind=self.schedule_rebind,
        )
        self._ssl_context: ssl.SSLContext | None = None
        self.mdns: MdnsAdvertiser | None = None
        """Advertises the gateway on mDNS, from `start` to `stop` (MOLTIS_DISABLE_MDNS=1 or
        OPENCLAW_DISABLE_BONJOUR=1 in the environment turns it off)."""
        self._runner: web.AppRunner | None = None
        self.connection_limits = ConnectionLimits(*connection_caps(None))
        """The caps on unauthenticated connections (set from the open-file limit at start)."""
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rebind_handle: asyncio.TimerHandle | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        config.subscribe(self._on_config_changed)
        if voice is not None:
            voice.observers.append(
                lambda kind, data: publish_voice_event(self.state.events, clock, kind, data)
            )

    @property
    def url(self) -> str:
        """The WebSocket URL clients on this machine use (`wss://` with TLS)."""
        return self.state.url

    @property
    def http_url(self) -> str:
        """The HTTP origin of the web app and the HTTP endpoints (`https://` with TLS)."""
        return self.state.http_url

    def attach_agent(self, agent: AgentServices) -> None:
        """Plug in the agent side (the runtime loads it after the gateway is listening):
        its runs' events become `chat`/`agent` frames, its session changes
        `sessions.changed` events."""
        # The bridge imports the agent's event types: loaded with the agent side (in its
        # thread, after the listener is up), not before the gateway answers.
        from moltis_desktop.gateway.chat_events import ChatEventBridge

        for unsubscribe in self._unsubscribe:
            unsubscribe()
        bridge = ChatEventBridge(self.state.events, self.state.clock)
        self._unsubscribe = [
            agent.chat.runs.subscribe(bridge),
            agent.chat.sessions.subscribe(self._session_changed),
        ]
        self.state.agent = agent
        self.state.agent_loading = False
        self.state.health.invalidate()

    def _session_changed(self, key: str, reason: str) -> None:
        payload = {"sessionKey": key, "reason": reason, "ts": self.state.clock.now_ms()}
        loop = self._loop
        if loop is None or _on_loop(loop):
            self.state.events.broadcast("sessions.changed", payload, scope=Scope.READ)
        else:  # the store was changed from a worker thread
            loop.call_soon_threadsafe(
                lambda: self.state.events.broadcast("sessions.changed", payload, scope=Scope.READ)
            )

    # ------------------------------------------------------------------ lifecycle

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[security_middleware], client_max_size=1024**2)
        app[STATE_KEY] = self.state
        add_routes(app)
        return app

    async def start(self) -> None:
        """Bind the listener and start the background work (ticks, health, config watch)."""
        self._loop = asyncio.get_running_loop()
        per_ip, total = connection_caps(raise_fd_limit())
        self.connection_limits = ConnectionLimits(per_ip, total)
        self._runner = GuardedAppRunner(
            self.build_app(),
            limits=self.connection_limits,
            settings=lambda: self.state.settings.gateway.http,
            access_log=None,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        await self._listen_owner_socket()
        try:
            await self._bind()
        except BaseException:
            if self._owner_socket is not None:  # free the lock: this gateway did not start
                self._owner_socket.close()
                self._owner_socket = None
            raise
        self.state.loop_monitor.start()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="gateway-tick"),
            asyncio.create_task(self._health_loop(), name="gateway-health"),
            asyncio.create_task(self.state.config.watch(), name="config-watch"),
        ]
        self.state.ready = True
        _LOGGER.info("gateway listening on %s", self.url)
        _LOGGER.info("web app: %s/ (`moltis dashboard` opens it signed in)", self.http_url)
        from moltis_desktop.gateway.discovery import MdnsAdvertiser

        self.mdns = MdnsAdvertiser(version=self.state.version, env=os.environ)
        self._advertise(self.state.settings)

    @property
    def owner_socket(self) -> Path | None:
        """The owner socket the gateway listens on (None when it does not)."""
        return self._owner_socket.path if self._owner_socket is not None else None

    async def _listen_owner_socket(self) -> None:
        """Serve the app on the owner socket too (before TCP: a second gateway for the same
        state dir is refused here, with the reason). Any other failure leaves TCP only."""
        path = self.owner_socket_path
        if path is None:
            return
        assert self._runner is not None
        try:
            bound = await asyncio.to_thread(bind_owner_socket, path)
        except OwnerSocketBusyError:
            raise
        except (OSError, MoltisError) as exc:
            _LOGGER.error(
                "cannot listen on the owner socket %s (%s): local tools need the token", path, exc
            )
            return
        site = web.SockSite(self._runner, bound.sock, backlog=128)
        try:
            await site.start()
        except OSError as exc:
            bound.close()
            _LOGGER.error("cannot listen on the owner socket %s: %s", path, exc)
            return
        self._owner_socket = bound
        _LOGGER.info("owner socket: %s (this user's processes sign in without a token)", path)

    async def _bind(self, port: int | None = None) -> None:
        """Listen where the settings say (on `port` instead of theirs when given)."""
        gw = self.state.settings.gateway
        context, fingerprint = await self._tls_context() if gw.tls.enabled else (None, None)
        await self._listen(resolve_bind(gw.bind), gw.port if port is None else port, context)
        self._ssl_context, self.state.tls_fingerprint = context, fingerprint

    async def _tls_context(self) -> tuple[ssl.SSLContext, str]:
        from moltis_desktop.gateway.tls import load_or_create_certificate, ssl_context

        try:
            material = await asyncio.to_thread(load_or_create_certificate, self.state.state_dir)
            return ssl_context(material), material.fingerprint_sha256
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MoltisError(
                f"cannot serve TLS: {exc}. Check that {self.state.state_dir / 'tls'} is writable "
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
            raise MoltisError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}. Is another gateway "
                f"running? Pick another port with `moltis gateway --port N` or gateway.port"
            ) from None
        self._site = site
        server = site._server  # the asyncio Server; its socket tells the real port
        sockets = getattr(server, "sockets", None) or ()
        self.state.host, self.state.port = host, (sockets[0].getsockname()[1] if sockets else port)

    async def rebind(self) -> None:
        """Move the listener to the current bind/port/TLS (connections already open stay)."""
        old = self._site
        gw = self.state.settings.gateway
        here = resolve_bind(gw.bind) == self.state.host and gw.port in (0, self.state.port)
        if old is None or not here:
            try:
                await self._bind()
            except Exception:
                if old is None or gw.port not in (0, self.state.port):
                    raise
                # The same port on an overlapping address (127.0.0.1 -> 0.0.0.0): the old
                # listener holds it, so free it first (and go back to it on failure).
                previous_host, previous = self.state.host, self._ssl_context
                await old.stop()
                try:
                    await self._bind(self.state.port)
                except Exception:
                    await self._listen(previous_host, self.state.port, previous)
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
                await self._bind(self.state.port)
            except Exception:
                await self._listen(self.state.host, self.state.port, previous)
                raise
        _LOGGER.info("gateway now listening on %s", self.state.url)
        self._advertise(self.state.settings)

    def _advertise(self, settings: Settings) -> None:
        """Bring the mDNS records in line with `settings` and the listener (in the background)."""
        if self.mdns is not None:
            self.mdns.update(
                settings,
                bind_host=self.state.host,
                port=self.state.port,
                tls_sha256=self.state.tls_fingerprint,
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
            _LOGGER.error("cannot move the listener, staying on %s: %s", self.state.url, exc)

    async def stop(
        self, reason: str = "gateway stopping", restart_expected_ms: int | None = None
    ) -> None:
        """Tell clients (`shutdown`), close them with 1012, and release the port."""
        if self._runner is None:
            return
        self.state.ready = False
        self.state.draining = True
        payload: dict[str, Any] = {"reason": reason}
        if restart_expected_ms is not None:
            payload["restartExpectedMs"] = restart_expected_ms
        self.state.events.broadcast("shutdown", payload)
        await asyncio.gather(
            *(
                c.close(CloseCode.SERVICE_RESTART, "service restart")
                for c in list(self.state.connections)
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
        self.state.loop_monitor.stop()
        if self.mdns is not None:
            await self.mdns.close()
            self.mdns = None
        await self._runner.cleanup()
        self._runner = None
        if self._owner_socket is not None:
            self._owner_socket.close()
            self._owner_socket = None
        _LOGGER.info("gateway stopped")

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.gateway.tick_interval_ms / 1000)
            self._guarded(
                lambda: self.state.events.broadcast("tick", {"ts": self.state.clock.now_ms()}),
                "tick",
            )

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.gateway.health_refresh_ms / 1000)
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
        self.state.events.broadcast("health", self.state.health.next_snapshot(), state_version=True)

    def _on_config_changed(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        state = self.state
        state.auth_throttle, state.browser_throttle = throttles(new.settings, state.clock)
        state.health.invalidate()
        state.events.broadcast(
            "config.changed",
            {"path": str(new.path), "hash": new.hash, "ts": state.clock.now_ms()},
            scope=Scope.READ,
        )
        for conn in state.connections:
            conn.max_buffered = new.settings.gateway.max_buffered_bytes
            conn.max_payload = new.settings.gateway.max_payload
        if self._runner is not None and state.config.restart_keys(old.settings, new.settings):
            self.schedule_rebind(0.0)
        if old.settings.discovery != new.settings.discovery:
            self._advertise(new.settings)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
