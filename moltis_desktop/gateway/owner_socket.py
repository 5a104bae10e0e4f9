"""The owner socket: the gateway's Unix-domain socket, on which a process of the user who
runs the gateway is the owner, without a token.

Who may connect is decided twice, by the kernel both times:
- the socket lives in a folder only the user may enter (0700; `$XDG_RUNTIME_DIR` or the
  state dir) and is itself 0600, so another user's process cannot even reach it;
- every connection's peer credentials are read when it opens (`SO_PEERCRED` on Linux,
  `LOCAL_PEERCRED` on macOS and the BSDs) and a peer of another uid is closed before a
  byte of it is read, with a security event.

Being the owner is a property of the connection (the listening socket it came through and
the kernel's answer about its peer), never of anything the client sends: no header, no
address, no parameter can claim it. Windows has no such socket (see docs/SECURITY.md).

One gateway per socket: the gateway holds an exclusive lock on `<socket>.lock` for its
life (the kernel drops it when the process dies, however it dies), so a second gateway
for the same state dir is told that one is running; a socket file left by a killed
gateway (its lock gone, nothing answering on it) is removed and made anew.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import security_event
from moltis_desktop.core.paths import private_dir

SOCKET_MODE = 0o600
_LINUX_UCRED = struct.Struct("3i")  # pid, uid, gid
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 0x001
_XUCRED_SIZE = 76  # u_int version, uid_t uid, short ngroups, gid_t groups[16]


class OwnerSocketBusyError(MoltisError):
    """Another gateway is running for the same state dir (it holds the socket)."""


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a connected Unix socket, as the kernel
    recorded it when that process connected; None where this platform cannot tell.
    (`sock`: a socket, or the socket-like object an asyncio or uvloop transport hands out.)"""
    if sys.platform.startswith("linux") and hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _LINUX_UCRED.size)
        return int(_LINUX_UCRED.unpack(raw)[1])
    if sys.platform == "darwin" or "bsd" in sys.platform:  # pragma: no cover - not Linux
        option = getattr(socket, "LOCAL_PEERCRED", _LOCAL_PEERCRED)
        raw = sock.getsockopt(_SOL_LOCAL, option, _XUCRED_SIZE)
        _version, uid = struct.unpack_from("=II", raw)
        return int(uid)
    return None  # pragma: no cover


def peer_is_owner(sock: Any, *, uid: int | None = None) -> bool:
    """Whether the peer of `sock` runs as this process's user (`uid`, for tests). A peer
    of another user, or one whose credentials cannot be read, is refused with a security
    event; where the platform has no peer credentials, the 0700 folder is the check."""
    expected = os.getuid() if uid is None else uid
    try:
        found = peer_uid(sock)
    except OSError as exc:
        security_event("owner_socket.refused", reason=f"peer credentials unreadable: {exc}")
        return False
    if found is None:  # pragma: no cover - no peer credentials on this platform
        return True
    if found != expected:
        security_event("owner_socket.refused", reason="peer of another user", peer_uid=found)
        return False
    return True


@dataclass
class OwnerSocket:
    """The bound (not yet listening) socket, the lock that makes it ours, and the file."""

    path: Path
    sock: socket.socket
    lock: IO[bytes]
    inode: int

    def close(self) -> None:
        """Remove the socket file (when it is still the one we made) and drop the lock."""
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.lock.close()  # releases the flock


def socket_answers(path: Path) -> bool:
    """Whether something accepts connections on the socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(str(path))
    except (BlockingIOError, InterruptedError):
        return True  # its backlog is full: alive, and busy
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def bind_owner_socket(path: Path) -> OwnerSocket:
    """Make the owner socket at `path`: its folder 0700 (refused when another user owns
    it), the lock taken (`OwnerSocketBusyError` when another gateway holds it), a stale
    socket file replaced, and the new socket bound 0600 before it listens (so nobody can
    connect while its mode is the umask's)."""
    import fcntl

    private_dir(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, SOCKET_MODE)
    lock = os.fdopen(fd, "r+b")
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OwnerSocketBusyError(
                f"another Moltis gateway is running for this state dir (it holds {path}): "
                "stop it first (or use another MOLTIS_HOME)"
            ) from None
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(info.st_mode):
                raise MoltisError(f"{path} exists and is not a socket; remove it")
            if socket_answers(path):
                raise OwnerSocketBusyError(
                    f"another Moltis gateway answers on {path}: stop it first "
                    "(or use another MOLTIS_HOME)"
                )
            os.unlink(path)  # left by a gateway that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, SOCKET_MODE)
            inode = os.lstat(path).st_ino
        except BaseException:
            sock.close()
            raise
    except BaseException:
        lock.close()
        raise
    return OwnerSocket(path, sock, lock, inode)
