"""Where Moltis keeps its files: the platform's directories, or one root for everything."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "moltis"
CONFIG_FILE_NAME = "moltis.toml"
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


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
        """Create the directories that do not exist yet (private to the user)."""
        for directory in (self.config_file.parent, self.state_dir, self.log_dir, self.cache_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)


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
