"""OpenClaw's published protocol schema (npm @openclaw/gateway-protocol), as validators.

`make install` fetches the schema into the test cache; it is not committed.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

PROTOCOL_PACKAGE_VERSION = "2026.9.1"
_ROOT_ID = "https://openclaw.ai/protocol.schema.json"


def tools_cache() -> Path:
    """Where `make install` keeps Node, the openclaw CLI and the schema."""
    env = os.environ.get("MOLTIS_TEST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moltis-desktop"


def schema_path() -> Path:
    return tools_cache() / f"gateway-protocol-{PROTOCOL_PACKAGE_VERSION}" / "protocol.schema.json"


@functools.cache
def _root() -> dict[str, Any]:
    path = schema_path()
    if not path.exists():
        raise FileNotFoundError(
            f"OpenClaw's protocol schema is missing at {path}: run `make install` first"
        )
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(_ROOT_ID, Resource.from_contents(_root()))


@functools.cache
def validator(definition: str) -> jsonschema.protocols.Validator:
    """A validator for `#/definitions/<definition>`."""
    if definition not in _root()["definitions"]:
        raise KeyError(definition)
    cls = jsonschema.validators.validator_for(_root())
    return cls({"$ref": f"{_ROOT_ID}#/definitions/{definition}"}, registry=_registry())


@functools.cache
def health_validator() -> jsonschema.protocols.Validator:
    """The health payload as `hello-ok.snapshot.health` defines it."""
    cls = jsonschema.validators.validator_for(_root())
    health = _root()["definitions"]["Snapshot"]["properties"]["health"]
    return cls(health, registry=_registry())


def has_definition(name: str) -> bool:
    return name in _root()["definitions"]


def method_scope(method: str) -> str | None:
    """The scope the schema's `methods` map gives a method."""
    entry = _root()["methods"].get(method)
    return None if entry is None else str(entry.get("scope"))


def result_definition(method: str) -> str | None:
    """The schema definition of a method's result (`logs.tail` -> `LogsTailResult`)."""
    pascal = "".join(p[:1].upper() + p[1:] for p in method.replace("-", ".").split("."))
    for name in (f"{pascal}Result", f"{pascal}Response"):
        if has_definition(name):
            return name
    return None


class FrameValidator:
    """Validates every frame a test receives; counts what it checked."""

    def __init__(self) -> None:
        self.checked: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.checked[what] = self.checked.get(what, 0) + 1

    def frame(self, frame: Any, method: str | None = None) -> None:
        validator("GatewayFrame").validate(frame)
        self._count("frame")
        kind = frame.get("type")
        if kind == "res":
            self._response(frame, method)
        elif kind == "event":
            self._event(frame)

    def _response(self, frame: dict[str, Any], method: str | None) -> None:
        payload = frame.get("payload")
        if frame.get("ok"):
            if method == "connect":
                if payload.get("protocol") == 3 and "canvasHostUrl" in payload:
                    # Protocol 3's hello-ok had `canvasHostUrl` (a string); the published
                    # schema is protocol 4's, which has `pluginSurfaceUrls` instead.
                    assert isinstance(payload["canvasHostUrl"], str) and payload["canvasHostUrl"]
                    payload = {k: v for k, v in payload.items() if k != "canvasHostUrl"}
                validator("HelloOk").validate(payload)
                self._count("hello-ok")
            elif method == "health":
                # The RPC adds `config` (the config file's state) to the snapshot shape.
                health_validator().validate({k: v for k, v in payload.items() if k != "config"})
                self._count("health")
            elif method == "system-presence":
                for entry in payload:
                    validator("PresenceEntry").validate(entry)
                self._count("system-presence")
            elif method is not None and (definition := result_definition(method)):
                validator(definition).validate(payload)
                self._count(definition)
        else:
            details = (frame.get("error") or {}).get("details")
            if isinstance(details, dict) and details.get("code") == "MISSING_SCOPE":
                validator("MissingScopeErrorDetails").validate(details)
                self._count("MissingScopeErrorDetails")

    def _event(self, frame: dict[str, Any]) -> None:
        event, payload = frame["event"], frame.get("payload")
        if event == "tick":
            validator("TickEvent").validate(payload)
        elif event == "shutdown":
            validator("ShutdownEvent").validate(payload)
        elif event == "health":
            health_validator().validate(payload)
        elif event == "chat":
            # No extra fields are allowed: what OpenClaw's chat event has no room for (a
            # setup error's buttons) goes in an event of ours (`moltis.chat.setup`).
            validator("ChatEvent").validate(payload)
        elif event == "presence":
            for entry in payload["presence"]:
                validator("PresenceEntry").validate(entry)
        elif event == "connect.challenge":
            assert isinstance(payload["nonce"], str) and payload["nonce"]
            assert isinstance(payload["ts"], int) and payload["ts"] >= 0
        self._count(f"event:{event}")
