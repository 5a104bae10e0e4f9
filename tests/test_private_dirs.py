"""The state directory and the folders in it are private to the user (0700), however they
were made (security review, finding 10)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from moltis_desktop.core.paths import PrivateDirError, private_dir
from tests.conftest import StartGateway
from tests.support.process import BIN, base_env, free_port

# What an older CLI or gateway left behind, all 0755.
OLD_FOLDERS = (
    "agents/main/sessions",
    "devices",
    "usage",
    "workspace/main/canvas",
    "voice/recordings",
    "node",
    "tls",
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_start_makes_an_old_state_dir_private(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    home = tmp_path / "gw0"  # the fixture's first home
    state = home / "state"
    for folder in OLD_FOLDERS:
        (state / folder).mkdir(parents=True)
    (state / "devices" / "paired.json").write_text("{}")
    outside = tmp_path / "projects"  # a folder of the user's, linked into the workspace
    outside.mkdir()
    (state / "workspace" / "linked").symlink_to(outside)
    (home / "logs").mkdir()
    for path in [state, *state.rglob("*"), outside, home / "logs"]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)

    handle = await start_gateway()
    assert handle.home == home
    folders = [state, *(p for p in state.rglob("*") if p.is_dir() and not p.is_symlink())]
    assert len(folders) == 14  # with run/, the owner socket's folder
    assert {str(p.relative_to(home)): _mode(p) for p in folders} == {
        str(p.relative_to(home)): 0o700 for p in folders
    }
    for other in ("logs", "cache", "config"):
        assert _mode(home / other) == 0o700, other
    assert _mode(outside) == 0o755  # a link is not followed out of the state dir
    assert _mode(state / "devices" / "paired.json") == 0o644  # files are left as they are


def test_a_fresh_cli_makes_private_folders(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    env = base_env(
        home,
        MOLTIS_URL=f"ws://127.0.0.1:{free_port()}",  # no gateway: the CLI writes the files
        MOLTIS_SECRETS_PASSPHRASE="pw-987654",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )

    def moltis(*args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [str(BIN / "moltis"), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            umask=0o022,  # a usual umask: whatever is private is so on purpose
        )
        assert done.returncode == 0, done.stderr

    moltis("config", "set", "logging.level", "debug")
    assert "debug" in (home / "config" / "moltis.toml").read_text()
    assert _mode(home / "config") == 0o700
    assert _mode(home) == 0o700  # a missing parent is made private too
    moltis("secrets", "set", "openai-api-key", stdin="sk-test-value-123\n")
    assert _mode(home / "state") == 0o700


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir(mode=0o777)
    old.chmod(0o777)
    assert private_dir(old) == old
    assert _mode(old) == 0o700
    new = private_dir(tmp_path / "a" / "b")
    assert _mode(new) == 0o700 and _mode(tmp_path / "a") == 0o700
    chosen = tmp_path / "chosen"  # a folder the user picked: created private, else untouched
    chosen.mkdir()
    chosen.chmod(0o755)
    private_dir(chosen, tighten=False)
    assert _mode(chosen) == 0o755
    mine = tmp_path / "link"
    mine.symlink_to(old)
    old.chmod(0o750)
    private_dir(mine)  # my own link to my own folder
    assert _mode(old) == 0o700


@pytest.mark.skipif(os.name == "nt" or os.getuid() != 0, reason="needs root to chown")
def test_private_dir_refuses_what_another_user_owns(tmp_path: Path) -> None:
    nobody = 65534
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o755)
    os.chown(theirs, nobody, nobody)
    with pytest.raises(PrivateDirError, match="belongs to another user"):
        private_dir(theirs)
    assert _mode(theirs) == 0o755
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o755)
    planted = tmp_path / "planted"
    planted.symlink_to(mine)
    os.lchown(planted, nobody, nobody)
    with pytest.raises(PrivateDirError, match="link that belongs to another user"):
        private_dir(planted)
    assert _mode(mine) == 0o755
