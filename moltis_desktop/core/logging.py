"""Structured logging: readable on a terminal, JSON lines in a rotating file, secrets redacted.

Security events (failed auth, refused connects, pairing) also go to their own file,
`security.log` next to the main log, through `security_event`; floods of identical events
and of malformed HTTP requests are rate-limited, so that noise cannot rotate them away.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, ClassVar, TextIO

from moltis_desktop.core.paths import private_dir

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

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where known secrets occur in `text`: (start, end) pairs, possibly overlapping."""
        found: list[tuple[int, int]] = []
        for secret in self._secrets:
            start = text.find(secret)
            while start >= 0:
                found.append((start, start + len(secret)))
                start = text.find(secret, start + len(secret))
        return found


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

SECURITY_LOGGER = "moltis_desktop.security"
"""The logger of security events; only they reach the security log."""
SECURITY_LOG_NAME = "security.log"
"""The security log's file name, next to the main log."""
# The aiohttp loggers that log on behalf of a request (the peer decides what they say).
_AIOHTTP_SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.websocket")
_FIELD_MAX_CHARS = 200


def security_log_for(log_file: Path) -> Path:
    """The security log that goes with the main log file `log_file`."""
    return log_file.with_name(SECURITY_LOG_NAME)


class RepeatLimiter:
    """Lets the first of identical events through per window and counts the others.

    A flood of the same event (one key) writes one line a window, and a count when the
    window is over; at most `budget` distinct keys pass per window (the others are counted
    together, under the key None), and at most `max_keys` are remembered, so that neither
    the log nor memory grows with the number of attempts or of attacking addresses.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        budget: int = 30,
        max_keys: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self._budget = budget
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key → [window start, suppressed count]; insertion order is window-start order.
        self._windows: dict[Hashable, list[float]] = {}
        self._budget_start = clock()
        self._admitted = 0
        self._overflow = 0

    def check(self, key: Hashable) -> tuple[bool, list[tuple[Hashable | None, int]]]:
        """Whether to log this event now, and the counts now due: (key, how many were
        suppressed in its window that ended), with key None for the over-budget ones."""
        now = self._clock()
        due: list[tuple[Hashable | None, int]] = []
        with self._lock:
            while self._windows:
                first_key = next(iter(self._windows))
                start, suppressed = self._windows[first_key]
                if now - start < self.window_s:
                    break
                del self._windows[first_key]
                if suppressed:
                    due.append((first_key, int(suppressed)))
            if now - self._budget_start >= self.window_s:
                if self._overflow:
                    due.append((None, self._overflow))
                self._budget_start, self._admitted, self._overflow = now, 0, 0
            seen = self._windows.get(key)
            if seen is not None:
                seen[1] += 1
                return False, due
            if self._admitted >= self._budget or len(self._windows) >= self._max_keys:
                self._overflow += 1
                return False, due
            self._windows[key] = [now, 0]
            self._admitted += 1
            return True, due


def _clean(value: Any) -> Any:
    """A field value safe to log: numbers as they are, text without control characters and
    cut short (fields may carry what a client sent)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: _FIELD_MAX_CHARS + 1])
    return text if len(text) <= _FIELD_MAX_CHARS else text[:_FIELD_MAX_CHARS] + "…"


class _SecurityEvents:
    def __init__(self) -> None:
        self.logger = logging.getLogger(SECURITY_LOGGER)
        self._limiters: dict[str, RepeatLimiter] = {}
        self._lock = threading.Lock()

    def limiter(self, event: str) -> RepeatLimiter:
        with self._lock:
            limiter = self._limiters.get(event)
            if limiter is None:
                limiter = self._limiters[event] = RepeatLimiter()
            return limiter

    def reset(self) -> None:
        with self._lock:
            self._limiters.clear()

    def emit(self, event: str, level: int, fields: dict[str, Any]) -> None:
        clean = {(f"{k}_" if k in _STANDARD_ATTRS else k): _clean(v) for k, v in fields.items()}
        limiter = self.limiter(event)
        allowed, due = limiter.check(tuple(sorted(clean.items())))
        window = int(limiter.window_s)
        for key, count in due:
            if key is None:
                self.logger.log(
                    level,
                    "%s: %d more from other addresses or clients in %d s (not logged one by one)",
                    event,
                    count,
                    window,
                    extra={"event": event, "suppressed": count},
                )
            else:
                assert isinstance(key, tuple)
                self.logger.log(
                    level,
                    "%s: %d more like this in the %d s after it (not logged one by one)",
                    event,
                    count,
                    window,
                    extra={"event": event, **dict(key), "suppressed": count},
                )
        if allowed:
            self.logger.log(level, "%s", event, extra={"event": event, **clean})


_SECURITY = _SecurityEvents()


def security_event(event: str, *, level: int = logging.WARNING, **fields: Any) -> None:
    """Log a security event (`auth.failed`, `connect.refused`, `pairing.requested`, …) to the
    main log and to the security log.

    `fields` (an `ip`, a `reason`, a device id) say what happened; identical events (the
    same event and fields) are logged once a minute, then as a count, so that an attacker
    repeating one attempt cannot flood the security log. Do not pass fields that differ on
    every attempt (a connection id): they would make every attempt a new event.
    """
    _SECURITY.emit(event, level, fields)


def _http_parse_error(exc: BaseException) -> bool:
    # aiohttp's HttpProcessingError (BadHttpMessage, BadStatusLine, InvalidHeader, …), found
    # by name so that this module does not import aiohttp.
    return any(
        cls.__name__ == "HttpProcessingError" and cls.__module__.startswith("aiohttp")
        for cls in type(exc).__mro__
    )


class AiohttpFloodGuard(logging.Filter):
    """Keeps what a peer sends out of the log, and a peer's floods out of its rotation.

    aiohttp logs a malformed request as an ERROR with a traceback whose text holds the
    request's raw bytes. Such records become one line, `malformed HTTP request from <peer>
    (<error class>)`, once a minute per peer and then a count. Other warnings and errors
    of aiohttp's server loggers keep their text but are limited to one a minute per message
    and place in the code.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._parse_errors = RepeatLimiter(window_s=60.0, budget=20, max_keys=1024, clock=clock)
        self._others = RepeatLimiter(window_s=60.0, budget=50, max_keys=1024, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _http_parse_error(exc):
            return self._parse_error(record, exc)
        if record.levelno < logging.WARNING:
            return True
        where: tuple[str, int] | None = None
        if exc is not None and exc.__traceback__ is not None:
            tb = exc.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        key = (record.name, str(record.msg), type(exc).__name__ if exc else None, where)
        allowed, due = self._others.check(key)
        logger = logging.getLogger(record.name)
        for due_key, count in due:
            message = due_key[1] if isinstance(due_key, tuple) else "other messages"
            logger.warning("%d more log records like %r in a minute (not logged)", count, message)
        return allowed

    def _parse_error(self, record: logging.LogRecord, exc: BaseException) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        peer = _clean(args[0]) if args and isinstance(args[0], str) else "unknown"
        allowed, due = self._parse_errors.check(peer)
        logger = logging.getLogger(record.name)
        for key, count in due:
            logger.info(
                "%d more malformed HTTP requests from %s in a minute (not logged one by one)",
                count,
                key if key is not None else "other addresses",
                extra={"peer": key, "suppressed": count},
            )
        if not allowed:
            return False
        level = min(record.levelno, logging.INFO)
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.msg = "malformed HTTP request from %s (%s); more from this address are counted"
        record.args = (peer, type(exc).__name__)
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _install_flood_guard() -> None:
    for name in _AIOHTTP_SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, AiohttpFloodGuard)]:
            logger.removeFilter(old)
        logger.addFilter(AiohttpFloodGuard())


def _remove_owned(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _OWNED_HANDLER_ATTR, False):
            logger.removeHandler(handler)
            handler.close()


def _file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    private_dir(path.parent, tighten=False)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(JsonLineFormatter())
    setattr(handler, _OWNED_HANDLER_ATTR, True)
    return handler


def configure_logging(
    *,
    level: str = "info",
    log_file: Path | None = None,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 5,
    console: TextIO | None = sys.stderr,
) -> None:
    """Send log records to the terminal (readable) and to `log_file` (JSON lines, rotated);
    security events also to `security.log` next to it (same format, rotated the same way).

    Safe to call again (after a config reload): the handlers it installed before are
    replaced, other handlers (pytest's, an embedding app's) are left alone.
    """
    root = logging.getLogger()
    security = logging.getLogger(SECURITY_LOGGER)
    _remove_owned(root)
    _remove_owned(security)
    _SECURITY.reset()  # a new destination counts afresh
    root.setLevel(level.upper())
    # Security events are written whatever the level (they are rate-limited instead).
    security.setLevel(min(logging.INFO, root.level))
    if console is not None:
        stream_handler = logging.StreamHandler(console)
        stream_handler.setFormatter(ConsoleFormatter(color=console.isatty()))
        setattr(stream_handler, _OWNED_HANDLER_ATTR, True)
        root.addHandler(stream_handler)
    if log_file is not None:
        root.addHandler(_file_handler(log_file, max_bytes, backups))
        security.addHandler(_file_handler(security_log_for(log_file), max_bytes, backups))
    # One line per HTTP request is noise for a personal gateway.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    _install_flood_guard()
