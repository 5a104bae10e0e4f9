"""The docs stay true: the config reference and the method table match the code."""

from __future__ import annotations

import re
from pathlib import Path

from moltis_desktop.config.schema import config_reference_doc
from moltis_desktop.gateway.broadcast import BASE_EVENTS
from moltis_desktop.gateway.methods import method_table
from moltis_desktop.gateway.registry import ANY_OPERATOR

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
    registry = method_table()
    for spec in registry:
        assert spec.name in rows, f"docs/PROTOCOL.md does not list {spec.name}"
        documented = rows[spec.name].strip()
        if spec.scope == ANY_OPERATOR:
            assert documented.startswith("any connection"), (spec.name, documented)
        else:
            assert documented == f"`{spec.scope}`", (spec.name, documented)
    assert set(rows) == {s.name for s in registry}, "docs/PROTOCOL.md lists unknown methods"


def test_protocol_doc_lists_every_event_the_gateway_declares() -> None:
    text = (DOCS / "PROTOCOL.md").read_text()
    text = text[text.index("## Events") :]
    text = text[: text.index("\n## ", 1)]
    rows = set(re.findall(r"^\| `([A-Za-z.-]+)` \|", text, re.M))
    declared = [*BASE_EVENTS, *method_table().events]
    assert len(declared) == len(set(declared)), "an event is declared by two areas"
    for event in declared:
        assert event in rows, f"docs/PROTOCOL.md does not list the event {event}"
