"""The config's JSON Schema and per-key help, derived from the settings dataclasses."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import sys
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
        elif typing.get_origin(tp) in (tuple, dict):
            item = _unwrap(typing.get_args(tp)[-1])
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
        if typing.get_origin(tp) in (tuple, dict):
            tp = _unwrap(typing.get_args(tp)[-1])
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


def _default_text(cls: type, name: str) -> str:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        value: Any = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return "(table)"
    if isinstance(value, tuple):
        value = list(value)
        if value and dataclasses.is_dataclass(value[0]):
            return "(see below)"
    if isinstance(value, dict) and not value:
        return "`{}`"
    import json

    return f"`{json.dumps(value)}`"


def reference_markdown() -> str:
    """docs/CONFIG.md's key reference, generated from the settings (kept true by a test)."""
    lines: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        rows = []
        nested: list[tuple[type, str]] = []
        for f in dataclasses.fields(cls):
            tp = _unwrap(hints[f.name])
            container = typing.get_origin(tp)
            item = _unwrap(typing.get_args(tp)[-1]) if container in (tuple, dict) else None
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                nested.append((tp, f"{prefix}{f.name}"))
                continue
            if isinstance(item, type) and dataclasses.is_dataclass(item):
                suffix = "[]" if container is tuple else ".<name>"
                nested.append((item, f"{prefix}{f.name}{suffix}"))
            rows.append(
                f"| `{prefix}{f.name}` | {allowed_values(tp)} | "
                f"{_default_text(cls, f.name)} | {docs.get(f.name, '')} |"
            )
        if rows:
            title = prefix.rstrip(".") or "(top level)"
            lines.extend(
                [
                    f"### `{title}`",
                    "",
                    cls.__doc__ or "",
                    "",
                    "| key | allowed | default | what it does |",
                    "| --- | --- | --- | --- |",
                    *rows,
                    "",
                ]
            )
        for sub, path in nested:
            walk(sub, f"{path}.")

    walk(Settings, "")
    return "\n".join(lines)


_DOC_HEAD = """# Configuration reference

Generated from the settings dataclasses (`moltis_desktop/config/settings.py`);
`tests/test_docs.py` fails when this file and the code disagree. Regenerate with:

    .venv/bin/python -m moltis_desktop.config.schema > docs/CONFIG.md

Where values come from, lowest first: defaults, the config file (`moltis config path`),
`MOLTIS_SECTION__KEY` environment variables, command-line flags. `${VAR}` and
`${VAR:-default}` are expanded in every string value; `$${` is a literal `${`.
Secrets are never written here: a key ending in `_secret` names an entry of the secret
store (`moltis secrets set NAME`).

"""


def config_reference_doc() -> str:
    """The whole of docs/CONFIG.md."""
    return _DOC_HEAD + reference_markdown()


if __name__ == "__main__":
    sys.stdout.write(config_reference_doc())
