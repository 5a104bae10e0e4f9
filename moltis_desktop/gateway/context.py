"""What a method handler gets: the calling connection and the gateway's services."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moltis_desktop.gateway.connection import Connection
    from moltis_desktop.gateway.server import GatewayServer


class MethodContext:
    """The context of one request."""

    __slots__ = ("conn", "gateway", "request_id")

    def __init__(self, gateway: GatewayServer, conn: Connection, request_id: str) -> None:
        self.gateway = gateway
        self.conn = conn
        self.request_id = request_id
