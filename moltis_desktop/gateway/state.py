"""The gateway's state: what the protocol reports and what handlers work with. No life
cycle here (`server.py` starts and stops things); handlers see it through their typed
`MethodContext`, HTTP routes through `STATE_KEY`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from moltis_desktop import __version__
from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import Settings
from moltis_desktop.config.store import ConfigStore
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.keys import ServiceMap
from moltis_desktop.gateway.auth import (
    FailedAuthThrottle,
    LegacyReplayGuard,
    PairingRequestLimiter,
    SharedSecret,
)
from moltis_desktop.gateway.broadcast import BASE_EVENTS, Broadcaster
from moltis_desktop.gateway.canvas_access import CanvasSurface
from moltis_desktop.gateway.connection import Connection
from moltis_desktop.gateway.dedupe import IdempotencyCache
from moltis_desktop.gateway.health import HealthCache
from moltis_desktop.gateway.loopmonitor import EventLoopMonitor
from moltis_desktop.gateway.nodes import NodeRegistry
from moltis_desktop.gateway.presence import PresenceTracker
from moltis_desktop.gateway.registry import MethodTable
from moltis_desktop.gateway.tickets import UiTickets
from moltis_desktop.gateway.trust import HostAllowlist
from moltis_desktop.pairing.bootstrap import BootstrapTokens
from moltis_desktop.pairing.store import PairingStore
from moltis_desktop.protocol.constants import Scope

if TYPE_CHECKING:
    from moltis_desktop.gateway.services import AgentServices
    from moltis_desktop.providers.local_catalog import LocalModelManager
    from moltis_desktop.voice.models import ModelManager
    from moltis_desktop.voice.service import VoiceService

_SYSTEM_EVENT_QUEUE = 20


def resolve_bind(bind: str) -> str:
    """The address to listen on for a `gateway.bind` value."""
    if bind == "loopback":
        return "127.0.0.1"
    if bind == "lan":
        return "0.0.0.0"  # noqa: S104 - binding every interface is what `lan` asks for
    return bind


def throttles(settings: Settings, clock: Clock) -> tuple[FailedAuthThrottle, FailedAuthThrottle]:
    """The failed-auth throttles for (clients, browsers) under `settings`."""
    auth = settings.gateway.auth
    common: dict[str, Any] = {
        "max_failures": auth.max_failures,
        "window_s": auth.failure_window_s,
        "lockout_s": auth.lockout_s,
        "clock": clock,
    }
    return (
        FailedAuthThrottle(exempt_loopback=auth.exempt_loopback, **common),
        FailedAuthThrottle(exempt_loopback=False, **common),
    )


class GatewayState:
    """Everything the gateway's handlers share, as typed parts."""

    def __init__(
        self,
        config: ConfigStore,
        *,
        methods: MethodTable,
        shared_secret: SharedSecret,
        log_file: Path,
        state_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        secrets: SecretStore | None = None,
        voice: VoiceService | None = None,
        voice_models: ModelManager | None = None,
        local_models: LocalModelManager | None = None,
        services: ServiceMap | None = None,
        rebind: Callable[[float], None] = lambda delay_s: None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._shared_secret = shared_secret
        self.log_file = log_file
        self.state_dir = state_dir
        self.secrets = secrets
        """The secret store (`moltis.secrets.*`), when the runtime has one."""
        self.version = __version__
        self.boot_id = str(uuid.uuid4())
        self.started_mono = clock.monotonic()
        self.methods = methods
        self.methods_advertised = methods.advertised()
        """`hello-ok.features.methods`."""
        self.events_advertised = [*BASE_EVENTS, *methods.events]
        """`hello-ok.features.events`: the gateway's own, then each area's."""
        self.connections: set[Connection] = set()
        self.preauth: Counter[str] = Counter()
        """Open sockets per IP that have not completed their handshake."""
        self.presence = PresenceTracker(version=self.version, instance_id=self.boot_id, clock=clock)
        self.health = HealthCache(self)
        self.events = Broadcaster(self.connections, self.state_version)
        self.dedupe = IdempotencyCache(clock=clock)
        self.loop_monitor = EventLoopMonitor()
        self.system_events: deque[str] = deque(maxlen=_SYSTEM_EVENT_QUEUE)
        self._init_http(clock)
        self.auth_throttle, self.browser_throttle = throttles(self.settings, clock)
        self.config_lock = asyncio.Lock()
        """Serialises config writes made through the protocol."""
        self.pairing = PairingStore(state_dir, clock)
        """Paired devices, pending requests and device tokens."""
        self.bootstrap = BootstrapTokens(state_dir, clock)
        """Setup codes' bootstrap tokens (`device.pair.setupCode`)."""
        self.pairing_requests = PairingRequestLimiter(
            lambda: self.settings.gateway.max_pairing_requests_per_minute, clock
        )
        self.nodes = NodeRegistry(
            settings=lambda: self.settings,
            pairing=self.pairing,
            events=self.events,
            clock=clock,
            state_dir=state_dir,
        )
        """Connected nodes, and the `node.invoke` calls waiting for them."""
        self.voice = voice
        """Speech, transcription and the talk loop; None in a gateway built without it."""
        self.voice_models = voice_models
        """The voice model manager; None without voice."""
        self.local_models = local_models
        """The local chat models' manager (`moltis.models.local.*`); None when not given."""
        self.services = services if services is not None else ServiceMap()
        """Services by typed key (what capabilities add; see docs/ARCHITECTURE.md)."""
        self.agent: AgentServices | None = None
        """The agent side (chat, models, plugins); None until loaded."""
        self.agent_loading = False
        """The agent side is being loaded (its methods answer "retry shortly")."""
        self.request_rebind = rebind
        """Move the listener to the current bind/port/TLS after a delay in seconds."""
        self._init_listener()

    def _init_http(self, clock: Clock) -> None:
        """What the HTTP routes beside the protocol keep."""
        self.ui_tickets = UiTickets(clock)
        """One-time sign-in tickets for the web app (`/#ticket=…`)."""
        self.canvas = CanvasSurface(clock)
        """The canvas's capability URLs and its live-reload sockets."""

    def _init_listener(self) -> None:
        """The listener, as `server.py` sets it up."""
        self.ready = False
        self.draining = False
        self.host = ""
        self.port = 0
        self.tls_fingerprint: str | None = None
        """SHA-256 of the TLS certificate served (lowercase hex, no colons); None without TLS."""
        self.legacy_signatures = LegacyReplayGuard()
        """Legacy v1 device signatures already used (each is accepted once)."""
        self.hosts = HostAllowlist()
        """The `Host` names requests may carry (with `gateway.allowed_hosts`)."""

    @property
    def shared_secret(self) -> SharedSecret:
        """What clients present to connect (the runtime replaces it when auth changes)."""
        return self._shared_secret

    @shared_secret.setter
    def shared_secret(self, secret: SharedSecret) -> None:
        if secret != self._shared_secret:
            # A new token or password: the canvas URLs handed out under the old one stop
            # working too (clients get fresh ones when they reconnect with the new secret).
            self.canvas.capabilities.rotate()
        self._shared_secret = secret

    @property
    def settings(self) -> Settings:
        """The current (last good) settings."""
        return self.config.current.settings

    def uptime_ms(self) -> int:
        return int((self.clock.monotonic() - self.started_mono) * 1000)

    def state_version(self) -> dict[str, int]:
        return {"presence": self.presence.version, "health": self.health.version}

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

    def broadcast_presence(self) -> None:
        """Push the presence list (a droppable event, with `stateVersion`)."""
        self.events.broadcast(
            "presence",
            {"presence": self.presence.entries()},
            droppable=True,
            scope=Scope.READ,
            state_version=True,
        )


STATE_KEY: web.AppKey[GatewayState] = web.AppKey("gateway-state", GatewayState)
