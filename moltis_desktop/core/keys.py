"""Typed keys for services looked up at run time (aiohttp's `AppKey` is the model).

A `ServiceKey[T]` names one service and carries its type, so `services[KEY]` is typed `T`
for mypy and nobody spells a service by a string. The module that defines what a service
*is* (its protocol or class) defines its key; whoever builds the service (the runtime, the
desktop app) puts it in a `ServiceMap`; tools and method handlers read it back by key.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class ServiceKey(Generic[T]):
    """The key of one service of type `T`. Compared by identity, like aiohttp's AppKey."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name
        """What the service is called in errors ("the canvas", "the session store")."""

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

    def get(self, key: ServiceKey[T]) -> T | None:
        return cast("T | None", self._items.get(key))
