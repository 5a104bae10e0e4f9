"""The config's JSON Schema and per-key help, derived from the settings dataclasses."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import typing
from typing import Any

import msgspec

from moltis_desktop.config.loader import _unwrap, allowed_values
from moltis_desktop.config.settings import RESTART_KEYS, Settings


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under each field of a settings dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _walk(cls: type, prefix: str, hints: dict[str, dict[str, Any]]) -> None:
    docs = field_docs(cls)
    types_ = typing.get_type_hints(cls, include_extras=True)
    for order, f in enumerate(dataclasses.fields(cls)):
        path = f"{prefix}{f.name}"
        tp = _unwrap(types_[f.name])
        hint: dict[str, Any] = {"label": f.name.replace("_", " ").capitalize(), "order": order}
        if f.name in docs:
            hint["help"] = docs[f.name]
        if f.name.endswith("_secret"):
            hint["tags"] = ["secret-name"]
        if path in RESTART_KEYS:
            hint["tags"] = [*hint.get("tags", []), "restart"]
        hint["group"] = prefix.split(".", 1)[0] if prefix else f.name
        hints[path] = hint
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            _walk(tp, f"{path}.", hints)
        elif typing.get_origin(tp) is tuple:
            item = _unwrap(typing.get_args(tp)[0])
            if isinstance(item, type) and dataclasses.is_dataclass(item):
                _walk(item, f"{path}.*.", hints)
            else:
                hint["placeholder"] = allowed_values(tp)


def _dataclasses(cls: type, seen: set[type] | None = None) -> set[type]:
    seen = set() if seen is None else seen
    if cls in seen:
        return seen
    seen.add(cls)
    for hint in typing.get_type_hints(cls).values():
        tp = _unwrap(hint)
        if typing.get_origin(tp) is tuple:
            tp = _unwrap(typing.get_args(tp)[0])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            _dataclasses(tp, seen)
    return seen


@functools.cache
def config_schema() -> dict[str, Any]:
    """`{schema, uiHints}`: the JSON Schema of the config file and help for every key."""
    schema = msgspec.json.schema(Settings)
    schema["title"] = "Moltis Desktop configuration"
    for cls in _dataclasses(Settings):
        props = schema["$defs"].get(cls.__name__, {}).get("properties", {})
        for name, doc in field_docs(cls).items():
            if name in props:
                props[name]["description"] = doc
    hints: dict[str, dict[str, Any]] = {}
    _walk(Settings, "", hints)
    return {"schema": schema, "uiHints": hints}
