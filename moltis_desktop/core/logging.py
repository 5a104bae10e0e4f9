"""Structured logging: readable on a terminal, JSON lines in a rotating file, secrets redacted."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, TextIO

REDACTED = "[redacted]"
# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}
_MIN_SECRET_LENGTH = 6


class SecretRedactor:
    """Knows every secret value the process has handled and blanks them out of text.

    The secret store registers each value it reads or writes, so a token that reaches a log
    message by accident (an exception text, a URL with `?token=`) is still never written.
    """

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Remember `secret`; values shorter than 6 characters are ignored (too ambiguous)."""
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def redact(self, text: str) -> str:
        """`text` with every known secret replaced by `[redacted]`."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


REDACTOR = SecretRedactor()


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.redact(self.format_unredacted(record))

    def format_unredacted(self, record: logging.LogRecord) -> str:
        return super().format(record)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class ConsoleFormatter(_RedactingFormatter):
    """`08:52:29 INFO  gateway: listening on ws://127.0.0.1:18789 port=18789`."""

    _COLORS: ClassVar[dict[int, str]] = {
        logging.DEBUG: "\x1b[2m",
        logging.WARNING: "\x1b[33m",
        logging.ERROR: "\x1b[31m",
        logging.CRITICAL: "\x1b[1;31m",
    }

    def __init__(self, color: bool = False) -> None:
        super().__init__()
        self._color = color

    def format_unredacted(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        name = record.name.removeprefix("moltis_desktop.")
        line = f"{stamp} {record.levelname:<5} {name}: {record.getMessage()}"
        fields = _extras(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if self._color and record.levelno in self._COLORS:
            line = f"{self._COLORS[record.levelno]}{line}\x1b[0m"
        return line


class JsonLineFormatter(_RedactingFormatter):
    """One JSON object per line.

    The keys follow the tslog records OpenClaw writes (`time`, `message`,
    `_meta.logLevelName`, `_meta.name`), so that `openclaw logs` renders our log unchanged;
    structured fields given with `extra=` are kept under `fields`.
    """

    def format_unredacted(self, record: logging.LogRecord) -> str:
        created = record.created
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        iso += f".{int((created % 1) * 1000):03d}Z"
        name = record.name.removeprefix("moltis_desktop.")
        doc: dict[str, Any] = {
            "time": iso,
            "level": record.levelname.lower(),
            "subsystem": name,
            "message": record.getMessage(),
            "_meta": {
                "date": iso,
                "logLevelId": _TSLOG_LEVEL_IDS.get(record.levelno, 3),
                "logLevelName": _TSLOG_LEVEL_NAMES.get(record.levelno, record.levelname),
                "name": json.dumps({"subsystem": name}),
            },
        }
        fields = _extras(record)
        if fields:
            doc["fields"] = fields
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


_TSLOG_LEVEL_IDS = {
    logging.DEBUG: 2,
    logging.INFO: 3,
    logging.WARNING: 4,
    logging.ERROR: 5,
    logging.CRITICAL: 6,
}
_TSLOG_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}

_OWNED_HANDLER_ATTR = "_moltis_owned"


def configure_logging(
    *,
    level: str = "info",
    log_file: Path | None = None,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 5,
    console: TextIO | None = sys.stderr,
) -> None:
    """Send log records to the terminal (readable) and to `log_file` (JSON lines, rotated).

    Safe to call again (after a config reload): the handlers it installed before are
    replaced, other handlers (pytest's, an embedding app's) are left alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED_HANDLER_ATTR, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level.upper())
    if console is not None:
        stream_handler = logging.StreamHandler(console)
        stream_handler.setFormatter(ConsoleFormatter(color=console.isatty()))
        setattr(stream_handler, _OWNED_HANDLER_ATTR, True)
        root.addHandler(stream_handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        file_handler.setFormatter(JsonLineFormatter())
        setattr(file_handler, _OWNED_HANDLER_ATTR, True)
        root.addHandler(file_handler)
    # One line per HTTP request is noise for a personal gateway.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
