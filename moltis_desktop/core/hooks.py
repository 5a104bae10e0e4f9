"""The plugin markers (pluggy): any layer may implement hooks; `plugins/` declares them."""

from __future__ import annotations

import pluggy

PROJECT = "moltis"
hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks a hook specification (in `moltis_desktop.plugins.hookspecs`)."""
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a hook implementation, in built-in and third-party plugins alike."""
