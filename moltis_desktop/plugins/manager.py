"""Loads plugins: the built-in ones and those installed under the `moltis_desktop.plugins`
entry-point group, through one pluggy manager."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

import pluggy

from moltis_desktop.core.hooks import PROJECT
from moltis_desktop.plugins import hookspecs

_LOGGER = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "moltis_desktop.plugins"
BUILTIN_PLUGINS = (
    "moltis_desktop.providers.builtin",
    "moltis_desktop.agent.builtin_tools",
)


def load_plugins(
    *,
    builtins: Iterable[str] = BUILTIN_PLUGINS,
    entry_points: bool = True,
) -> tuple[pluggy.PluginManager, list[dict[str, Any]]]:
    """A plugin manager with the built-ins and the installed plugins registered, and the
    plugins that failed to load (reported on `health`, never fatal)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    errors: list[dict[str, Any]] = []
    for name in builtins:
        try:
            pm.register(importlib.import_module(name), name=name)
        except Exception as exc:  # a broken plugin must not stop the gateway
            _LOGGER.exception("built-in plugin %s failed to load", name)
            errors.append({"id": name, "origin": "builtin", "activated": False, "error": str(exc)})
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:
            _LOGGER.exception("installed plugins failed to load")
            errors.append(
                {
                    "id": ENTRY_POINT_GROUP,
                    "origin": "entry-point",
                    "activated": False,
                    "error": str(exc),
                }
            )
    return pm, errors


def collect(pm: pluggy.PluginManager, hook: str) -> list[Any]:
    """Call a `register_*` hook and return everything the plugins registered."""
    items: list[Any] = []
    getattr(pm.hook, hook)(register=items.append)
    return items


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the registered plugins."""
    return sorted(name for name, _plugin in pm.list_name_plugin() if name)
