"""Where Moltis keeps its files: the platform's directories, or one root for everything."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from moltis_desktop.core.errors import MoltisError

APP_NAME = "moltis"
CONFIG_FILE_NAME = "moltis.toml"
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
PRIVATE_MODE = 0o700
_STATE_TIGHTEN_DEPTH = 3
"""How deep below the state dir `tighten_state_dir` goes: `agents/<id>/sessions`."""

_LOGGER = logging.getLogger(__name__)


class PrivateDirError(MoltisError):
    """A directory Moltis keeps private belongs to someone else (or is a link that does)."""


@dataclass(frozen=True)
class AppPaths:
    """The directories Moltis reads and writes."""

    config_dir: Path
    """Holds the config file (`moltis.toml`)."""
    state_dir: Path
    """Holds state that must survive restarts: encrypted secrets, sessions, pairing."""
    log_dir: Path
    """Holds the gateway's JSON log file and its rotated copies."""
    cache_dir: Path
    """Holds downloads and other things that can be rebuilt."""
    config_file: Path
    """The config file in use."""

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None) -> AppPaths:
        """Work out the paths from the environment.

        `MOLTIS_HOME` puts everything under one directory (portable installs, tests).
        `MOLTIS_CONFIG` names the config file; its extension picks the format.
        Otherwise the platform's own directories are used (platformdirs).
        """
        env = os.environ if env is None else env
        home = env.get("MOLTIS_HOME")
        if home:
            root = Path(home).expanduser()
            config_dir, state_dir = root / "config", root / "state"
            log_dir, cache_dir = root / "logs", root / "cache"
        else:
            import platformdirs

            config_dir = platformdirs.user_config_path(APP_NAME, appauthor=False)
            state_dir = platformdirs.user_state_path(APP_NAME, appauthor=False)
            log_dir = platformdirs.user_log_path(APP_NAME, appauthor=False)
            cache_dir = platformdirs.user_cache_path(APP_NAME, appauthor=False)
        explicit = env.get("MOLTIS_CONFIG")
        if explicit:
            config_file = Path(explicit).expanduser()
        else:
            config_file = _existing_config(config_dir) or config_dir / CONFIG_FILE_NAME
        return cls(config_dir, state_dir, log_dir, cache_dir, config_file)

    def ensure(self) -> None:
        """Create the directories that do not exist yet, and make Moltis's own private to
        the user (0700), also when an older version made them readable by others.

        A config file named elsewhere (`MOLTIS_CONFIG`) gets its folder created if missing,
        but an existing folder of the user's choosing is left as it is.
        """
        for directory in (self.state_dir, self.log_dir, self.cache_dir):
            private_dir(directory)
        folder = self.config_file.parent
        private_dir(folder, tighten=folder == self.config_dir)


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """`path` as a directory only its owner may enter (0700); returns it.

    Missing directories (and missing parents) are created 0700. With `tighten`, an existing
    `path` is set to 0700 when it is more open; it must belong to the user running Moltis,
    and so must a symbolic link at `path` (a link someone else made is never followed):
    otherwise `PrivateDirError`. Without `tighten` an existing directory is left as it is
    (for folders the user chose, such as a custom log file's). On Windows only the creation
    applies (its folders inherit the user profile's ACL).
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        # Made meanwhile by another process: checked below like an old one.
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, PRIVATE_MODE)
    if os.name == "nt":  # pragma: no cover
        return path
    if tighten:
        _tighten(path)
    elif not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
    return path


def _tighten(path: Path) -> None:
    uid = os.getuid()
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    if path.is_symlink():
        # Followed only when the link is ours; the folder it names is checked below.
        if os.lstat(path).st_uid != uid:
            raise PrivateDirError(
                f"{path} is a link that belongs to another user; remove it (Moltis keeps "
                "private files there)"
            )
        fd = os.open(path, flags)
    else:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if info.st_uid != uid:
            raise PrivateDirError(
                f"{path} belongs to another user (uid {info.st_uid}); Moltis keeps private "
                "files there: give it to your user (chown) or point MOLTIS_HOME elsewhere"
            )
        if stat.S_IMODE(info.st_mode) != PRIVATE_MODE:
            os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)


def tighten_state_dir(state_dir: Path) -> None:
    """Make the state dir and the folders in it (`agents/<id>/sessions`, `devices/`,
    `usage/`, `workspace/<id>`, …, down to three levels) private (0700), as they would have
    been made; older versions made them readable by others. Links inside are not followed
    and folders of another user are skipped (with a warning): what they hold is not ours.
    """
    if not state_dir.exists() or os.name == "nt":
        return
    private_dir(state_dir)
    level = [state_dir]
    for _depth in range(_STATE_TIGHTEN_DEPTH):
        below: list[Path] = []
        for parent in level:
            try:
                entries = list(os.scandir(parent))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    _tighten(Path(entry.path))
                except PrivateDirError as exc:
                    _LOGGER.warning("%s", exc)
                    continue
                except OSError as exc:
                    _LOGGER.warning("cannot make %s private: %s", entry.path, exc)
                    continue
                below.append(Path(entry.path))
        level = below


def sessions_dir(state_dir: Path, agent_id: str) -> Path:
    """An agent's sessions (`sessions.json` and the transcripts), OpenClaw's layout:
    `<state_dir>/agents/<agentId>/sessions` (the id as given: callers normalise it)."""
    return state_dir / "agents" / agent_id / "sessions"


def _existing_config(config_dir: Path) -> Path | None:
    # TOML is the default; a moltis.yaml or moltis.json is used when it is the one present.
    for suffix in CONFIG_SUFFIXES:
        candidate = config_dir / f"moltis{suffix}"
        if candidate.exists():
            return candidate
    return None


SOCKET_DIR_NAME = "moltis-desktop"
"""The gateway's folder in the user's runtime directory (`$XDG_RUNTIME_DIR`)."""
SOCKET_NAME = "gateway.sock"
_MAX_SOCKET_PATH = 100
"""Longest socket path used (the kernel's limit is 107 bytes on Linux, 103 on macOS)."""


def gateway_socket_path(paths: AppPaths, env: Mapping[str, str] | None = None) -> Path | None:
    """Where the gateway's owner socket lives (the same answer for the gateway and the
    CLI, from the same environment); None on Windows, which has no peer credentials.

    - With `MOLTIS_HOME` (a self-contained install, tests): `<state dir>/run/gateway.sock`,
      so that two homes never share a socket.
    - Else `$XDG_RUNTIME_DIR/moltis-desktop/gateway.sock` (a per-user tmpfs, 0700, emptied
      at logout), else `<state dir>/run/gateway.sock`.
    - A path too long for the kernel becomes `<tmp>/moltis-desktop-<uid>/<hash>.sock`, the
      hash naming the state dir.

    The folder is created 0700 by `private_dir` when the gateway listens, which refuses a
    folder of another user (someone who made `/tmp/moltis-desktop-<uid>` first gets no
    socket out of it, only a refusal).
    """
    if os.name == "nt":  # pragma: no cover
        return None
    env = os.environ if env is None else env
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir and not env.get("MOLTIS_HOME") and os.path.isabs(runtime_dir):
        path = Path(runtime_dir) / SOCKET_DIR_NAME / SOCKET_NAME
    else:
        path = paths.state_dir / "run" / SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(os.fsencode(paths.state_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"{SOCKET_DIR_NAME}-{os.getuid()}" / f"{digest}.sock"
