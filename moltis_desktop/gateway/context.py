"""What a method handler gets: the calling connection and the gateway's parts, typed."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from moltis_desktop.protocol.constants import ErrorCode
from moltis_desktop.protocol.frames import GatewayError

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from moltis_desktop.agent.service import ChatService
    from moltis_desktop.config.settings import Settings
    from moltis_desktop.config.store import ConfigStore
    from moltis_desktop.core.clock import Clock
    from moltis_desktop.core.keys import ServiceKey
    from moltis_desktop.gateway.broadcast import EventSink
    from moltis_desktop.gateway.connection import Connection
    from moltis_desktop.gateway.nodes import NodeRegistry
    from moltis_desktop.gateway.presence import PresenceTracker
    from moltis_desktop.gateway.services import AgentServices
    from moltis_desktop.gateway.state import GatewayState
    from moltis_desktop.pairing.bootstrap import BootstrapTokens
    from moltis_desktop.pairing.store import PairingStore
    from moltis_desktop.voice.service import VoiceService

T = TypeVar("T")

STARTING_RETRY_MS = 250


class MethodContext:
    """The context of one request: who asked (`conn`), and the parts a handler may use."""

    __slots__ = ("conn", "request_id", "state")

    def __init__(self, state: GatewayState, conn: Connection, request_id: str) -> None:
        self.state = state
        """The whole state, for the few helpers that report on all of it (health, status)."""
        self.conn = conn
        self.request_id = request_id

    # ------------------------------------------------------------------ always there

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @property
    def config(self) -> ConfigStore:
        return self.state.config

    @property
    def settings(self) -> Settings:
        """The current (last good) settings."""
        return self.state.settings

    @property
    def events(self) -> EventSink:
        """Publishes events to the clients allowed to see them."""
        return self.state.events

    @property
    def pairing(self) -> PairingStore:
        return self.state.pairing

    @property
    def bootstrap(self) -> BootstrapTokens:
        return self.state.bootstrap

    @property
    def nodes(self) -> NodeRegistry:
        return self.state.nodes

    @property
    def presence(self) -> PresenceTracker:
        return self.state.presence

    @property
    def connections(self) -> AbstractSet[Connection]:
        return self.state.connections

    # ------------------------------------------------------------------ maybe there

    @property
    def agent(self) -> AgentServices:
        """The agent side, or OpenClaw's retryable "starting" answer while it loads."""
        services = self.state.agent
        if services is None:
            if self.state.agent_loading:
                raise GatewayError(
                    ErrorCode.UNAVAILABLE,
                    "the agent is starting; retry shortly",
                    retryable=True,
                    retry_after_ms=STARTING_RETRY_MS,
                    details={"reason": "startup-sidecars"},
                )
            raise GatewayError(ErrorCode.UNAVAILABLE, "the agent is not running in this gateway")
        return services

    @property
    def chat(self) -> ChatService:
        """The chat service (see `agent` for when it is not there yet)."""
        return self.agent.chat

    @property
    def voice(self) -> VoiceService:
        """The voice service, or an error saying voice is not installed."""
        service = self.state.voice
        if service is None:
            raise GatewayError(
                ErrorCode.UNAVAILABLE,
                "voice is not available in this gateway (install moltis-desktop[voice])",
            )
        return service

    def service(self, key: ServiceKey[T]) -> T:
        """A service a capability added (`state.services`), or an error saying it is not
        available in this gateway."""
        value = self.state.services.get(key)
        if value is None:
            raise GatewayError(
                ErrorCode.UNAVAILABLE, f"{key.name} is not available in this gateway"
            )
        return value
