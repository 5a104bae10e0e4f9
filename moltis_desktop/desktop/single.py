"""One app per user: a second launch tells the first to show itself, then exits."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from PySide6.QtCore import QObject
from PySide6.QtNetwork import QLocalServer, QLocalSocket

_TIMEOUT_MS = 500


def instance_name(home: str) -> str:
    """The local socket's name: per user and per data directory (two MOLTIS_HOMEs are two
    apps)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    digest = hashlib.sha256(home.encode("utf-8")).hexdigest()[:12]
    return f"moltis-desktop-{uid}-{digest}"


class SingleInstance(QObject):
    """Claims the name, or hands `message` to the app that already holds it."""

    def __init__(self, name: str, on_message: Callable[[str], None]) -> None:
        super().__init__()
        self.name = name
        self._on_message = on_message
        self._server: QLocalServer | None = None

    def claim(self, message: str = "show") -> bool:
        """True when this process is now the app; False when another one is (it got
        `message`)."""
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if socket.waitForConnected(_TIMEOUT_MS):
            socket.write(message.encode("utf-8") + b"\n")
            socket.waitForBytesWritten(_TIMEOUT_MS)
            socket.disconnectFromServer()
            return False
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # A socket file left by a crashed app: nobody answered on it, so take it over.
            QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                raise RuntimeError(f"cannot claim the single-instance name: {server.errorString()}")
        server.newConnection.connect(self._accept)
        self._server = server
        return True

    def _accept(self) -> None:
        assert self._server is not None
        while (conn := self._server.nextPendingConnection()) is not None:
            conn.readyRead.connect(lambda c=conn: self._read(c))
            conn.disconnected.connect(conn.deleteLater)

    def _read(self, conn: QLocalSocket) -> None:
        while conn.canReadLine():
            line = bytes(conn.readLine().data()).decode("utf-8", "replace").strip()
            if line:
                self._on_message(line)

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
