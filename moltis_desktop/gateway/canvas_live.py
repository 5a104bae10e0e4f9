"""The canvas's live reload: one file watcher per canvas folder, fanned out to the pages'
`__live` sockets.

The watcher is `watchfiles` (inotify on Linux, FSEvents on macOS, polling where neither
works), imported when the first live socket opens, so an idle gateway never loads it. Each
watched folder gets one dedicated thread (never the default executor, which the agent's
file and session I/O share); the thread hands changes to the loop with
`call_soon_threadsafe`, and the loop sends `reload` to that folder's sockets. The watcher
stops when the last socket of its folder goes, and on gateway clean-up.

Changes under the folder's `snapshots/` (where the canvas tool saves PNGs) and to dotfiles
(editor swap files, `.git`) do not reload pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

_LOGGER = logging.getLogger(__name__)

MAX_LIVE_SOCKETS = 512
"""Live sockets open at once, over all pages and clients (a page has one)."""
SNAPSHOTS = "snapshots"
"""The canvas tool's PNGs, in the canvas folder: changes there reload nothing."""
_DEBOUNCE_MS = 400
"""A burst of writes makes one `reload`, at most this long after its first change."""
_STEP_MS = 50
"""The watcher thread wakes this often (to group changes and to see a stop)."""
_READY_TIMEOUT_S = 10.0
_SEND_TIMEOUT_S = 5.0


def reloads(folder: Path, path: str) -> bool:
    """Whether a change to `path` (under `folder`) reloads the folder's pages."""
    try:
        parts = Path(path).relative_to(folder).parts
    except ValueError:
        return False
    if not parts:
        return True
    return parts[0] != SNAPSHOTS and not any(part.startswith(".") for part in parts)


class WatcherFailedError(Exception):
    """The folder could not be watched."""


class _FolderWatch:
    """One folder's watcher thread and the sockets it reloads."""

    def __init__(self, folder: Path, loop: asyncio.AbstractEventLoop, hub: LiveHub) -> None:
        self.folder = folder
        self.loop = loop
        self.hub = hub
        self.sockets: set[web.WebSocketResponse] = set()
        self.reserved = 0
        """Sockets admitted for this folder (open, or opening)."""
        self.ready: asyncio.Future[None] = loop.create_future()
        """Done once the folder is watched (an exception when it cannot be)."""
        self.finished: asyncio.Future[None] = loop.create_future()
        """Done once the thread has ended."""
        self.stop_event = threading.Event()
        self._sending: asyncio.Task[None] | None = None
        self._again = False
        self.thread = threading.Thread(
            target=self._run, name=f"canvas-watch:{folder.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        error: Exception | None = None
        try:
            from watchfiles._rust_notify import RustNotify

            self.folder.mkdir(parents=True, exist_ok=True)
            # RustNotify (what `watchfiles.watch` runs) rather than `watch()`: the folder
            # is watched once it is built, so a socket is accepted only when a change
            # made after it opened is certain to reload it.
            # (paths, debug, force_polling, poll_delay_ms, recursive, ignore_permission_denied)
            with RustNotify([str(self.folder)], False, False, 300, True, True) as notify:
                self._post(self._set_ready, None)
                while not self.stop_event.is_set():
                    raw = notify.watch(_DEBOUNCE_MS, _STEP_MS, 0, self.stop_event)
                    if raw == "stop":
                        break
                    if isinstance(raw, set) and any(reloads(self.folder, p) for _, p in raw):
                        self._post(self._changed)
        except Exception as exc:  # handed to the loop, which logs it
            error = exc
        finally:
            self._post(self._ended, error)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(callback, *args)

    # ------------------------------------------------------------------ on the loop

    def _set_ready(self, _: None) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _ended(self, error: Exception | None) -> None:
        if error is not None:
            _LOGGER.warning("cannot watch the canvas folder %s: %s", self.folder, error)
        if not self.ready.done():
            self.ready.set_exception(WatcherFailedError(f"cannot watch {self.folder}: {error}"))
            self.ready.exception()  # retrieved: a socket that gave up waiting is not an error
        if not self.finished.done():
            self.finished.set_result(None)
        self.hub.watcher_ended(self)

    def _changed(self) -> None:
        if self._sending is not None and not self._sending.done():
            self._again = True  # the sockets get one more `reload` once this round is out
            return
        self._sending = self.loop.create_task(self._send_reloads())

    async def _send_reloads(self) -> None:
        while True:
            self._again = False
            await asyncio.gather(*(_send(ws, "reload") for ws in list(self.sockets)))
            if not self._again:
                return


async def _send(ws: web.WebSocketResponse, text: str) -> None:
    with contextlib.suppress(Exception):  # a closing or stuck socket misses this one
        await asyncio.wait_for(ws.send_str(text), _SEND_TIMEOUT_S)


class LiveHub:
    """The live sockets, by folder, and one watcher per folder that has any."""

    def __init__(self, max_sockets: int = MAX_LIVE_SOCKETS) -> None:
        self.max_sockets = max_sockets
        self._watches: dict[Path, _FolderWatch] = {}
        self._stopping: set[_FolderWatch] = set()
        self._tasks: set[asyncio.Task[bool]] = set()

    @property
    def count(self) -> int:
        """Sockets admitted (open, or opening)."""
        return sum(w.reserved for w in self._watches.values())

    @property
    def watched(self) -> list[Path]:
        """The folders being watched."""
        return list(self._watches)

    def admit(self, folder: Path) -> _FolderWatch | None:
        """A place for one more socket on `folder` (its watcher started if need be), or None
        when the hub is full. Give it back with `leave`."""
        if self.count >= self.max_sockets:
            return None
        watch = self._watches.get(folder)
        if watch is None:
            watch = _FolderWatch(folder, asyncio.get_running_loop(), self)
            self._watches[folder] = watch
            watch.start()
        watch.reserved += 1
        return watch

    async def ready(self, watch: _FolderWatch) -> None:
        """Wait until `watch` watches its folder (WatcherFailedError when it cannot)."""
        await asyncio.wait_for(asyncio.shield(watch.ready), _READY_TIMEOUT_S)

    def join(self, watch: _FolderWatch, ws: web.WebSocketResponse) -> None:
        """`ws` (admitted on `watch`) is open: it gets `reload` from now on."""
        watch.sockets.add(ws)

    def leave(self, watch: _FolderWatch, ws: web.WebSocketResponse | None) -> None:
        """Give back a place taken with `admit`; the last one stops the folder's watcher."""
        if ws is not None:
            watch.sockets.discard(ws)
        watch.reserved -= 1
        if watch.reserved <= 0 and self._watches.get(watch.folder) is watch:
            self._retire(watch)

    def _retire(self, watch: _FolderWatch) -> None:
        del self._watches[watch.folder]
        self._stopping.add(watch)
        watch.stop()

    def watcher_ended(self, watch: _FolderWatch) -> None:
        """`watch`'s thread has ended (stopped, or failed)."""
        self._stopping.discard(watch)
        if self._watches.get(watch.folder) is watch:
            # It died under its sockets: close them, and their pages reconnect (which
            # starts a new watcher) after a back-off.
            del self._watches[watch.folder]
            for ws in list(watch.sockets):
                task = asyncio.get_running_loop().create_task(
                    ws.close(code=1011, message=b"canvas watcher stopped")
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def close_sockets(self) -> None:
        """Close every live socket (the gateway is shutting down)."""
        sockets = [ws for w in self._watches.values() for ws in w.sockets]
        await asyncio.gather(
            *(ws.close(code=1001, message=b"gateway stopping") for ws in sockets),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        """Stop every watcher and wait for their threads."""
        for watch in list(self._watches.values()):
            self._retire(watch)
        stopping = list(self._stopping)
        if stopping:
            await asyncio.wait([w.finished for w in stopping], timeout=_READY_TIMEOUT_S)
        for watch in stopping:
            watch.thread.join(0.5)  # it has said its last word: this is its return
