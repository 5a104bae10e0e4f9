"""Small things every `moltis` subcommand uses: JSON output and running a coroutine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (for `--json`)."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine for a CLI command."""
    return asyncio.run(coro)
