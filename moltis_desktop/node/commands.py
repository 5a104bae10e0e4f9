"""The commands a node answers (`node.invoke`): a registry of async handlers, and the
built-in `system.*` ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

_LOGGER = logging.getLogger(__name__)

CommandHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""Takes the decoded params (`{}` when none were sent); returns a JSON-able result."""

SYSTEM_RUN = "system.run"
RUN_OUTPUT_CAP = 200 * 1024
"""Bytes of stdout (and, separately, stderr) `system.run` returns; the rest is dropped."""
RUN_DEFAULT_TIMEOUT_MS = 120_000
"""How long `system.run` lets a program run when the caller gives no `timeoutMs`."""
NOTIFY_TIMEOUT_S = 5.0


class CommandError(Exception):
    """A command that cannot be done; `code` and `message` go back in `node.invoke.result`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NodeCommands:
    """Named async handlers. `system.run` is registered but answers `COMMAND_DISABLED`
    unless `allow_run` (there are no exec approvals yet, so running programs is all or
    nothing, chosen by whoever starts the node)."""

    def __init__(self, *, allow_run: bool = False) -> None:
        self.allow_run = allow_run
        self._handlers: dict[str, CommandHandler] = {}
        self.register("system.which", system_which)
        self.register("system.notify", system_notify)
        self.register(SYSTEM_RUN, system_run)

    def register(self, name: str, handler: CommandHandler) -> None:
        """Add (or replace) a command. Register before connecting: the gateway learns the
        command list in `connect`."""
        self._handlers[name] = handler

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)

    def enabled(self, name: str) -> bool:
        return name in self._handlers and (name != SYSTEM_RUN or self.allow_run)

    def names(self) -> list[str]:
        """The commands this node offers (what `connect.params.commands` lists)."""
        return sorted(name for name in self._handlers if self.enabled(name))

    async def invoke(self, name: str, params: Any) -> Any:
        """Run a command; raises `CommandError` (never anything else) when it fails."""
        handler = self._handlers.get(name)
        if handler is None:
            raise CommandError("UNKNOWN_COMMAND", f"this node has no command {name!r}")
        if not self.enabled(name):
            raise CommandError(
                "COMMAND_DISABLED",
                f"{name} is off on this node; restart it with `moltis node run --allow-run` "
                "to let the gateway run programs here",
            )
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise CommandError("INVALID_REQUEST", f"{name}: params must be an object")
        try:
            return await handler(params)
        except CommandError:
            raise
        except Exception as exc:
            _LOGGER.exception("node command %s failed", name)
            raise CommandError("COMMAND_FAILED", f"{name} failed: {exc}") from None


def _str_list(params: dict[str, Any], key: str, command: str) -> list[str]:
    value = params.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CommandError("INVALID_REQUEST", f"{command}: `{key}` must be a list of strings")
    return value


async def system_which(params: dict[str, Any]) -> dict[str, Any]:
    """`{bins: [name]}` → `{bins: {name: absolute path}}`, only the ones found on PATH."""
    names = _str_list(params, "bins", "system.which")
    return {"bins": await asyncio.to_thread(_which, names)}


def _which(names: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name)
        if path:
            found[name] = os.path.abspath(path)
    return found


async def system_notify(params: dict[str, Any]) -> dict[str, Any]:
    """`{title, body?}` → `{ok: true, delivered}`: a desktop notification through
    `notify-send` when there is one; otherwise (and whenever it fails) only a log line."""
    title = str(params.get("title") or "Moltis")
    body = str(params.get("body") or "")
    _LOGGER.info("notification: %s %s", title, body)
    program = shutil.which("notify-send")
    if program is None:
        return {"ok": True, "delivered": False}
    delivered = False
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            "--app-name=Moltis",
            "--",
            title,
            body,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(NOTIFY_TIMEOUT_S):
                delivered = await proc.wait() == 0
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    except OSError as exc:
        _LOGGER.info("notify-send failed: %s", exc)
    return {"ok": True, "delivered": delivered}


class _Capture:
    """One output stream, kept up to `cap` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    async def read(self, stream: asyncio.StreamReader | None) -> None:
        # Keeps reading past the cap (and drops it) so the program never blocks on a full pipe.
        if stream is None:
            return
        while chunk := await stream.read(65536):
            room = self.cap - len(self.data)
            if len(chunk) > room:
                self.truncated = True
            self.data += chunk[: max(room, 0)]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _kill(proc: asyncio.subprocess.Process) -> None:
    # The whole process group: a shell script's children must not outlive the timeout.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform != "win32":
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover
            proc.kill()


def _run_params(params: dict[str, Any]) -> tuple[list[str], str | None, float, dict[str, str]]:
    argv = _str_list(params, "command", SYSTEM_RUN)
    if not argv or not argv[0]:
        raise CommandError("INVALID_REQUEST", "system.run: `command` is empty")
    cwd = params.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise CommandError("INVALID_REQUEST", "system.run: `cwd` must be a string")
    timeout_ms = params.get("timeoutMs")
    if timeout_ms is None:
        timeout_ms = RUN_DEFAULT_TIMEOUT_MS
    if not isinstance(timeout_ms, int | float) or isinstance(timeout_ms, bool) or timeout_ms <= 0:
        raise CommandError("INVALID_REQUEST", "system.run: `timeoutMs` must be a positive number")
    extra = params.get("env") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise CommandError("INVALID_REQUEST", "system.run: `env` must map names to strings")
    return argv, cwd, float(timeout_ms) / 1000, {**os.environ, **extra}


async def system_run(params: dict[str, Any]) -> dict[str, Any]:
    """`{command: [argv], cwd?, timeoutMs?, env?}` → `{exitCode, stdout, stderr, timedOut,
    truncated}`. No shell; `env` is added to the node's environment."""
    argv, cwd, timeout_s, env = _run_params(params)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=sys.platform != "win32",
        )
    except OSError as exc:
        raise CommandError(
            "EXEC_FAILED", f"cannot run {argv[0]!r}: {exc.strerror or exc}"
        ) from None
    _LOGGER.info("system.run: %s (pid %d)", argv[0], proc.pid)
    out, err = _Capture(RUN_OUTPUT_CAP), _Capture(RUN_OUTPUT_CAP)
    readers = asyncio.gather(out.read(proc.stdout), err.read(proc.stderr))
    timed_out = False
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(readers)
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            _kill(proc)
            await proc.wait()
        # A grandchild that left the process group may still hold the pipes open.
        try:
            async with asyncio.timeout(2.0):
                await asyncio.shield(readers)
        except TimeoutError:
            readers.cancel()
    return {
        "exitCode": proc.returncode,
        "stdout": out.text(),
        "stderr": err.text(),
        "timedOut": timed_out,
        "truncated": out.truncated or err.truncated,
    }
