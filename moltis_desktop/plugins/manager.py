"""Loads plugins: the built-in ones and those installed under the `moltis_desktop.plugins`
entry-point group, through one pluggy manager, and records which plugin registered what
(each plugin's `register` callback is bound to its name, as in simonw/llm)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy

from moltis_desktop.agent.tools import ToolRegistry
from moltis_desktop.core.hooks import PROJECT
from moltis_desktop.plugins import hookspecs
from moltis_desktop.providers.base import ProviderSpec

_LOGGER = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "moltis_desktop.plugins"
BUILTIN_PLUGINS = (
    "moltis_desktop.providers.builtin",
    "moltis_desktop.tools.builtin",
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


class Register(Protocol):
    """Where a hook's items go: `register(item, plugin=<the plugin's name>)`."""

    def __call__(self, item: Any, *, plugin: str) -> None: ...


@dataclass
class Contributions:
    """Items registered through a hook, each with the plugin that gave it."""

    items: list[tuple[str, Any]] = field(default_factory=list)
    """(plugin name, item), in the order the hook ran."""

    def register(self, item: Any, *, plugin: str) -> None:
        self.items.append((plugin, item))

    def values(self) -> list[Any]:
        return [item for _plugin, item in self.items]


def collect(pm: pluggy.PluginManager, hook: str, register: Register) -> list[dict[str, Any]]:
    """Call a `register_*` hook, one plugin at a time, each with `register` bound to its
    name. A plugin whose hook fails is left out (and returned as an error entry, the shape
    of `health.plugins.errors`); the others still register."""
    errors: list[dict[str, Any]] = []
    caller = getattr(pm.hook, hook)
    # pluggy calls the last registered first; keep that order.
    for impl in reversed(caller.get_hookimpls()):
        name = impl.plugin_name

        def bound(item: Any, _plugin: str = name) -> None:
            register(item, plugin=_plugin)

        try:
            impl.function(register=bound)
        except Exception as exc:
            _LOGGER.exception("plugin %s failed in %s", name, hook)
            errors.append({"id": name, "origin": hook, "activated": False, "error": str(exc)})
    return errors


@dataclass(frozen=True)
class PluginReport:
    """The plugins loaded, those that failed, and which gave what (`health.plugins`,
    `moltis plugins list`)."""

    names: list[str]
    errors: list[dict[str, Any]]
    provided: list[tuple[str, str, str]] = field(default_factory=list)
    """(plugin, kind, name): e.g. (`moltis_desktop.tools.builtin`, `tool`, `current_time`)."""


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the registered plugins."""
    return sorted(name for name, _plugin in pm.list_name_plugin() if name)


@dataclass(frozen=True)
class Loaded:
    """Everything the plugins registered."""

    providers: list[ProviderSpec]
    tools: ToolRegistry
    report: PluginReport


def load(*, builtins: Iterable[str] = BUILTIN_PLUGINS, entry_points: bool = True) -> Loaded:
    """Load the plugins and collect their providers and tools, with provenance. A plugin
    that fails (to load, or in a hook) is reported and left out; the others still load."""
    pm, errors = load_plugins(builtins=builtins, entry_points=entry_points)
    providers = Contributions()
    errors += collect(pm, "register_providers", providers.register)
    tools = ToolRegistry()
    errors += collect(pm, "register_tools", tools.register)
    provided = [(plugin, "provider", spec.kind) for plugin, spec in providers.items]
    provided += [(tools.origins[name], "tool", name) for name in tools.names()]
    return Loaded(providers.values(), tools, PluginReport(plugin_names(pm), errors, provided))
