"""Tools the model can call: typed Python functions, their JSON Schema, and a registry that
runs them with timeouts and result-size limits."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from moltis_desktop.core.keys import ServiceKey, ServiceMap
from moltis_desktop.providers.base import ToolCall, ToolResult, ToolSpec

_LOGGER = logging.getLogger(__name__)

ToolHandler = Callable[..., Awaitable[Any]]
T = TypeVar("T")


@dataclass
class ToolContext:
    """What a tool knows about the turn that called it, and the services it may use."""

    agent_id: str
    session_key: str
    run_id: str
    services: ServiceMap = field(default_factory=ServiceMap)
    """Services by typed key (the session store, the chat service, the canvas, …)."""

    def service(self, key: ServiceKey[T]) -> T:
        """A service, or an error saying the tool cannot work here."""
        value = self.services.get(key)
        if value is None:
            raise ToolError(f"this tool needs {key.name}, which is not available here")
        return value


class ToolError(Exception):
    """A tool failed in a way the model should hear about (the message is sent to it)."""


@dataclass(frozen=True)
class Tool:
    """A callable tool: `handler(ctx, **arguments)` with arguments checked against `params`."""

    name: str
    description: str
    params: type
    """A msgspec Struct describing the arguments (generated from the handler's signature)."""
    handler: ToolHandler
    timeout_s: float | None = None
    """Overrides `agents.tool_timeout_s` for this tool."""
    requires: tuple[ServiceKey[Any], ...] = ()
    """Services the tool cannot work without: it is offered only where they all exist
    (the canvas tool needs the desktop app's canvas)."""

    @property
    def parameters(self) -> dict[str, Any]:
        """The arguments' JSON Schema (an object schema, definitions inlined)."""
        return _json_schema(self.params)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


def _json_schema(struct: type) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)
    defs = schema.pop("$defs", {})
    ref = schema.get("$ref", "")
    root: dict[str, Any] = dict(defs.get(ref.rsplit("/", 1)[-1], schema)) if ref else schema
    root.pop("title", None)
    if defs and ref:
        others = {k: v for k, v in defs.items() if f"#/$defs/{k}" != ref}
        if others:
            root["$defs"] = others
    root.setdefault("properties", {})
    root["type"] = "object"
    return root


def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    timeout_s: float | None = None,
    requires: tuple[ServiceKey[Any], ...] = (),
) -> Callable[[ToolHandler], Tool]:
    """Make a tool from `async def handler(ctx: ToolContext, arg: type = default, ...)`.

    The arguments' JSON Schema comes from the type hints (use
    `Annotated[str, msgspec.Meta(description=...)]` to describe one); the description from
    the docstring.
    """

    def decorate(fn: ToolHandler) -> Tool:
        hints = typing.get_type_hints(fn, include_extras=True)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for param in list(inspect.signature(fn).parameters.values())[1:]:
            annotation = hints.get(param.name, Any)
            if param.default is inspect.Parameter.empty:
                fields.append((param.name, annotation))
            else:
                fields.append((param.name, annotation, param.default))
        tool_name = name or fn.__name__
        struct = msgspec.defstruct(
            f"{tool_name}_args", fields, forbid_unknown_fields=True, kw_only=True
        )
        doc = inspect.cleandoc(fn.__doc__ or "")
        return Tool(tool_name, description or doc, struct, fn, timeout_s, requires)

    return decorate


def _allowed(name: str, allow: Iterable[str], deny: Iterable[str]) -> bool:
    import fnmatch

    if any(fnmatch.fnmatchcase(name, pattern) for pattern in deny):
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)


def _usable(item: Tool, services: ServiceMap | None) -> bool:
    return services is None or all(key in services for key in item.requires)


class ToolRegistry:
    """The tools available to agents (built-ins and plugins register the same way), and
    which plugin gave each."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.origins: dict[str, str] = {}
        """The plugin that registered each tool, by tool name."""
        for item in tools:
            self.register(item)

    def register(self, item: Tool, *, plugin: str = "") -> None:
        if item.name in self._tools:
            raise ValueError(
                f"tool {item.name!r} is registered twice (by {self.origins[item.name] or '?'} "
                f"and {plugin or '?'})"
            )
        self._tools[item.name] = item
        self.origins[item.name] = plugin

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(
        self,
        allow: Iterable[str] = ("*",),
        deny: Iterable[str] = (),
        services: ServiceMap | None = None,
    ) -> list[ToolSpec]:
        """The tools an agent may use, as the model sees them (without those whose
        services are missing from `services`, when given)."""
        allow, deny = tuple(allow), tuple(deny)
        return [
            t.spec()
            for n, t in sorted(self._tools.items())
            if _allowed(n, allow, deny) and _usable(t, services)
        ]

    async def run(
        self,
        call: ToolCall,
        ctx: ToolContext,
        *,
        timeout_s: float,
        max_chars: int,
        allow: Iterable[str] = ("*",),
        deny: Iterable[str] = (),
    ) -> ToolResult:
        """Run one call; every failure becomes an error result the model can read."""
        item = self._tools.get(call.name)
        if (
            item is None
            or not _allowed(call.name, tuple(allow), tuple(deny))
            or not _usable(item, ctx.services)
        ):
            return ToolResult(
                call.id, call.name, f"error: there is no tool named {call.name!r}", is_error=True
            )
        try:
            args: Any = msgspec.convert(dict(call.arguments), item.params)
        except msgspec.ValidationError as exc:
            return ToolResult(call.id, call.name, f"error: invalid arguments: {exc}", is_error=True)
        limit = item.timeout_s or timeout_s
        try:
            async with asyncio.timeout(limit):
                value = await item.handler(ctx, **msgspec.structs.asdict(args))
        except TimeoutError:
            return ToolResult(
                call.id,
                call.name,
                f"error: the tool did not finish within {limit:g} s",
                is_error=True,
            )
        except ToolError as exc:
            return ToolResult(call.id, call.name, f"error: {exc}", is_error=True)
        except Exception as exc:
            _LOGGER.exception("tool %s failed", call.name)
            return ToolResult(
                call.id, call.name, f"error: {type(exc).__name__}: {exc}", is_error=True
            )
        return ToolResult(call.id, call.name, _truncate(_as_text(value), max_chars))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(msgspec.to_builtins(value), ensure_ascii=False, indent=1)


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = len(text) - max_chars
    return f"{text[:max_chars]}\n[… {cut} more characters cut: the result was too long]"
