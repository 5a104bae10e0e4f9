"""Typed keys for services looked up at run time (aiohttp's `AppKey` is the model).

A `ServiceKey[T]` names one service and carries its type, so `services[KEY]` is typed `T`
for mypy and nobody spells a service by a string. The module that defines what a service
*is* (its protocol or class) defines its key; whoever builds the service (the runtime, the
desktop app) puts it in a `ServiceMap`; tools and method handlers read it back by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar, cast, overload

T = TypeVar("T")
D = TypeVar("D")


class ServiceKey(Generic[T]):
    """The key of one service of type `T`. Compared by identity, like aiohttp's AppKey."""

    __slots__ = ("description", "name")

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        """What the service is called in errors ("the canvas", "the session store")."""
        self.description = description

    def __repr__(self) -> str:
        return f"<ServiceKey {self.name}>"


class ServiceMap:
    """Services by typed key. Setting a key twice replaces the service (a restart)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[ServiceKey[Any], Any] = {}

    def __setitem__(self, key: ServiceKey[T], value: T) -> None:
        self._items[key] = value

    def __getitem__(self, key: ServiceKey[T]) -> T:
        return cast(T, self._items[key])

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[ServiceKey[Any]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def get(self, key: ServiceKey[T]) -> T | None: ...

    @overload
    def get(self, key: ServiceKey[T], default: D) -> T | D: ...

    def get(self, key: ServiceKey[T], default: Any = None) -> Any:
        return self._items.get(key, default)

    def pop(self, key: ServiceKey[T]) -> T | None:
        """Remove a service (it went away); returns it, or None when it was not there."""
        return cast("T | None", self._items.pop(key, None))
