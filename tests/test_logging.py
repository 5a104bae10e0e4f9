"""The gateway's log: readable on a terminal, JSON lines in a file, rotated."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from moltis_desktop.core.logging import configure_logging


def test_console_is_readable_and_file_is_json(tmp_path: Path) -> None:
    console = io.StringIO()
    log_file = tmp_path / "moltis.log"
    configure_logging(level="info", log_file=log_file, console=console)
    logger = logging.getLogger("moltis_desktop.gateway.server")
    logger.info("listening on %s", "ws://127.0.0.1:1", extra={"port": 1})
    logger.debug("not shown at info")
    line = console.getvalue().strip()
    assert line.endswith("INFO  gateway.server: listening on ws://127.0.0.1:1 port=1")
    records = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["message"] == "listening on ws://127.0.0.1:1"
    assert record["level"] == "info"
    assert record["subsystem"] == "gateway.server"
    assert record["fields"] == {"port": 1}
    assert record["_meta"]["logLevelName"] == "INFO"
    assert record["time"].endswith("Z")


def test_log_file_rotates(tmp_path: Path) -> None:
    log_file = tmp_path / "moltis.log"
    configure_logging(level="info", log_file=log_file, console=None, max_bytes=2000, backups=2)
    logger = logging.getLogger("moltis_desktop.test")
    for i in range(100):
        logger.info("record number %d with some padding to fill the file", i)
    assert log_file.stat().st_size <= 2000
    assert (tmp_path / "moltis.log.1").exists()
    assert (tmp_path / "moltis.log.2").exists()
    assert not (tmp_path / "moltis.log.3").exists()
    last = json.loads(log_file.read_text().splitlines()[-1])
    assert last["message"].startswith("record number 99")


def test_reconfiguring_replaces_only_our_handlers(tmp_path: Path) -> None:
    foreign = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(foreign)
    try:
        configure_logging(log_file=tmp_path / "a.log", console=None)
        configure_logging(log_file=tmp_path / "b.log", console=None)
        ours = [h for h in root.handlers if getattr(h, "_moltis_owned", False)]
        assert len(ours) == 1
        assert foreign in root.handlers
    finally:
        root.removeHandler(foreign)
