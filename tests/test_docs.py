"""The docs stay true: the config reference and the method table match the code."""

from __future__ import annotations

import re
from pathlib import Path

from moltis_desktop.config.schema import config_reference_doc
from moltis_desktop.gateway.registry import ANY_OPERATOR, MethodTable
from moltis_desktop.gateway.server import builtin_tables

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_reference_is_generated_from_the_settings() -> None:
    assert (DOCS / "CONFIG.md").read_text() == config_reference_doc(), (
        "docs/CONFIG.md is stale: regenerate it (command at the top of the file)"
    )


def test_protocol_doc_lists_every_method_with_its_scope() -> None:
    text = (DOCS / "PROTOCOL.md").read_text()
    text = text[text.index("## Methods") :]
    text = text[: text.index("\n## ", 1)]
    rows = dict(re.findall(r"^\| `([A-Za-z.-]+)`(?: \(after hello\))? \| ([^|]+) \|", text, re.M))
    registry = MethodTable()
    for table in builtin_tables():
        registry.extend(table)
    for spec in registry:
        assert spec.name in rows, f"docs/PROTOCOL.md does not list {spec.name}"
        documented = rows[spec.name].strip()
        if spec.scope == ANY_OPERATOR:
            assert documented.startswith("any connection"), (spec.name, documented)
        else:
            assert documented == f"`{spec.scope}`", (spec.name, documented)
    assert set(rows) == {s.name for s in registry}, "docs/PROTOCOL.md lists unknown methods"
