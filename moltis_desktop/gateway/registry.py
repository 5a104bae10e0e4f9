"""Method tables: each RPC is declared where it is written, with the scope it needs."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from moltis_desktop.protocol.constants import ErrorCode, Role, Scope
from moltis_desktop.protocol.frames import GatewayError

Handler = Callable[[Any, Any], Any]
"""`handler(ctx: MethodContext, params)`: the context is typed where handlers are written
(`gateway.context`, which sits above this module)."""
AsyncHandler = Callable[[Any, Any], Awaitable[Any]]

ANY_OPERATOR = "any"
"""Scope marker: any authenticated operator may call the method, even with no scopes."""


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One registered RPC."""

    name: str
    handler: Handler | AsyncHandler
    scope: str
    """The operator scope needed (`operator.read`, …) or `any`."""
    roles: frozenset[str]
    """Roles that may call it."""
    is_async: bool
    """Awaited in its own task (else called inline, which is faster)."""
    params: type | None
    """A msgspec Struct the params must fit, or None to pass them as they are."""
    dedupe: bool
    """Results are remembered by `idempotencyKey` for 5 minutes."""
    advertised: bool
    """Listed in `hello-ok.features.methods`."""


class EmptyParams(msgspec.Struct, forbid_unknown_fields=True):
    """Params of a method that takes none (anything else is refused)."""


class MethodTable:
    """A set of methods declared with the `@table.method(...)` decorator, and the events
    its area emits (`hello-ok.features.events`)."""

    def __init__(self, *, events: Iterable[str] = ()) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self.events: list[str] = list(events)

    def method(
        self,
        name: str,
        *,
        scope: str,
        roles: Iterable[str] = (Role.OPERATOR,),
        params: type | None = None,
        dedupe: bool = False,
        advertised: bool = True,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of `name`."""

        def decorate(fn: Handler) -> Handler:
            self.add(
                MethodSpec(
                    name,
                    fn,
                    scope,
                    frozenset(roles),
                    inspect.iscoroutinefunction(fn),
                    params,
                    dedupe,
                    advertised,
                )
            )
            return fn

        return decorate

    def add(self, spec: MethodSpec) -> None:
        """Register a method; a name can be registered once."""
        if spec.name in self._specs:
            raise ValueError(f"method {spec.name!r} is registered twice")
        if (
            spec.scope != ANY_OPERATOR
            and not spec.scope.startswith("operator.")
            and spec.roles != frozenset({Role.NODE})
        ):
            raise ValueError(f"method {spec.name!r}: unknown scope {spec.scope!r}")
        self._specs[spec.name] = spec

    def extend(self, other: MethodTable) -> None:
        """Add every method and event of `other`."""
        for spec in other:
            self.add(spec)
        self.events.extend(e for e in other.events if e not in self.events)

    def get(self, name: str) -> MethodSpec | None:
        return self._specs.get(name)

    def __iter__(self) -> Iterator[MethodSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def advertised(self) -> list[str]:
        """Names for `features.methods`, in registration order."""
        return [s.name for s in self._specs.values() if s.advertised]


def has_scope(scopes: frozenset[str], needed: str) -> bool:
    """Whether `scopes` satisfy `needed` (admin satisfies all; write implies read)."""
    return (
        needed in scopes
        or Scope.ADMIN in scopes
        or (needed == Scope.READ and Scope.WRITE in scopes)
    )


def operator_may(role: str, scopes: frozenset[str], scope: str) -> bool:
    """Whether a connection is an operator whose scopes satisfy `scope` (events and
    snapshots that need a scope go to operators only)."""
    return role == Role.OPERATOR and has_scope(scopes, scope)


def forbidden(scope: str) -> GatewayError:
    """OpenClaw's missing-scope error."""
    return GatewayError(
        ErrorCode.FORBIDDEN,
        f"missing scope: {scope}",
        details={"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": [scope]},
    )


def missing_scope(spec: MethodSpec, role: str, scopes: frozenset[str]) -> GatewayError | None:
    """Why a connection with `role`/`scopes` may not call `spec`, or None when it may."""
    if role not in spec.roles:
        return GatewayError.invalid(f"unauthorized role: {role}")
    if role != Role.OPERATOR or spec.scope == ANY_OPERATOR or has_scope(scopes, spec.scope):
        return None
    return forbidden(spec.scope)


def convert_params(spec: MethodSpec, params: Any) -> Any:
    """`params` checked against the method's params type (unknown keys are refused)."""
    if spec.params is None:
        return params
    try:
        return msgspec.convert({} if params is None else params, spec.params)
    except msgspec.ValidationError as exc:
        raise GatewayError.invalid(f"invalid {spec.name} params: {exc}") from None
