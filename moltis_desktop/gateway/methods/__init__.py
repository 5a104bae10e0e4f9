"""The gateway's RPC methods, one module per area; each declares its methods' scopes and the
events its area emits. A new area is one module here and one line in `method_table`."""

from __future__ import annotations

from moltis_desktop.gateway.methods import (
    catalog,
    chat,
    config,
    devices,
    local_models,
    logs,
    nodes,
    secrets,
    sessions,
    system,
    voice,
    voice_models,
)
from moltis_desktop.gateway.registry import MethodTable

AREAS = (
    system,
    logs,
    config,
    catalog,
    chat,
    sessions,
    secrets,
    devices,
    nodes,
    voice,
    voice_models,
    local_models,
)


def method_table() -> MethodTable:
    """Every method of every area, and their events, in one table."""
    table = MethodTable()
    for area in AREAS:
        table.extend(area.TABLE)
    return table
