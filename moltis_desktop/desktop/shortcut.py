"""A system-wide shortcut that opens the chat (pynput's global hot keys: X11, macOS,
Windows; Wayland does not let an app grab keys). Qt has no API for global shortcuts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

_LOGGER = logging.getLogger(__name__)
_NAMED = {"ctrl": "<ctrl>", "alt": "<alt>", "shift": "<shift>", "meta": "<cmd>", "super": "<cmd>"}


def to_pynput(sequence: str) -> str:
    """Qt's portable text ("Ctrl+Alt+M") as pynput's hot key ("<ctrl>+<alt>+m")."""
    parts = [p.strip() for p in sequence.split("+") if p.strip()]
    if not parts:
        raise ValueError("empty shortcut")
    out = []
    for part in parts:
        low = part.lower()
        if low in _NAMED:
            out.append(_NAMED[low])
        elif len(part) == 1:
            out.append(low)
        elif low.startswith("f") and low[1:].isdigit():
            out.append(f"<{low}>")
        else:
            out.append(f"<{low}>")
    if all(p.startswith("<") and p[1:-1] in {"ctrl", "alt", "shift", "cmd"} for p in out):
        raise ValueError("a shortcut needs a key besides the modifiers")
    return "+".join(out)


class GlobalShortcut:
    """One hot key; `set` replaces it (an empty sequence turns it off)."""

    def __init__(self, on_trigger: Callable[[], None]) -> None:
        self._on_trigger = on_trigger
        self._listener: Any = None
        self.sequence = ""

    def set(self, sequence: str, loop: asyncio.AbstractEventLoop) -> str | None:
        """Listen for `sequence`; returns why it cannot, or None."""
        self.stop()
        self.sequence = ""
        if not sequence:
            return None
        try:
            hotkey = to_pynput(sequence)
        except ValueError as exc:
            return f"{sequence!r} is not a usable shortcut: {exc}"
        try:
            from pynput import keyboard
        except Exception as exc:  # no X server, Wayland, missing permission on macOS
            return f"global shortcuts are not available here ({exc})".replace("\n", " ")
        try:
            listener = keyboard.GlobalHotKeys(
                {hotkey: lambda: loop.call_soon_threadsafe(self._on_trigger)}
            )
            listener.daemon = True
            listener.start()
        except Exception as exc:
            return f"the shortcut could not be registered: {exc}"
        self._listener = listener
        self.sequence = sequence
        _LOGGER.info("global shortcut %s opens the chat", sequence)
        return None

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
