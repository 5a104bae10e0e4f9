"""`connect` params: their shape (as the published schema has it) and version negotiation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from moltis_desktop.protocol.constants import (
    CLIENT_IDS,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Role,
)
from moltis_desktop.protocol.frames import NonEmpty

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
ClientMode = Literal["webchat", "cli", "ui", "backend", "node", "worker", "probe", "test"]


class ClientInfo(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel", omit_defaults=True
):
    """`connect.params.client`."""

    id: NonEmpty
    version: NonEmpty
    platform: NonEmpty
    mode: ClientMode
    display_name: NonEmpty | None = None
    build_id: Annotated[str, msgspec.Meta(min_length=1, max_length=96)] | None = None
    device_family: NonEmpty | None = None
    model_identifier: NonEmpty | None = None
    time_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    instance_id: NonEmpty | None = None


class DeviceProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`connect.params.device`: a signed device identity."""

    id: NonEmpty
    public_key: NonEmpty
    signature: NonEmpty
    signed_at: Annotated[int, msgspec.Meta(ge=0)]
    nonce: str = ""
    """The challenge nonce; only loopback clients signing the legacy v1 payload omit it."""


class ConnectAuth(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`connect.params.auth`."""

    token: str | None = None
    password: str | None = None
    device_token: str | None = None
    bootstrap_token: str | None = None
    approval_runtime_token: str | None = None
    agent_runtime_identity_token: str | None = None
    api_key: str | None = msgspec.field(default=None, name="api_key")


class ConnectParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`connect.params` (schema `ConnectParams`, plus Moltis's `timezone`)."""

    min_protocol: PositiveInt
    max_protocol: PositiveInt
    client: ClientInfo
    caps: list[NonEmpty] = msgspec.field(default_factory=list)
    commands: list[NonEmpty] | None = None
    computer_use: Any = None
    worker_runs: Any = None
    permissions: dict[str, bool] | None = None
    path_env: str | None = None
    role: NonEmpty = Role.OPERATOR
    scopes: list[NonEmpty] | None = None
    device: DeviceProof | None = None
    auth: ConnectAuth | None = None
    locale: str | None = None
    user_agent: str | None = None
    timezone: str | None = None


class ConnectParamsError(ValueError):
    """`connect` params that do not fit the schema; the message says where."""


def parse_connect_params(params: Any) -> ConnectParams:
    """Validate `connect` params (unknown keys are refused, as the schema does)."""
    if not isinstance(params, dict):
        raise ConnectParamsError("invalid connect params: must be object")
    try:
        parsed = msgspec.convert(params, ConnectParams)
    except msgspec.ValidationError as exc:
        raise ConnectParamsError(f"invalid connect params: {exc}") from None
    if parsed.client.id not in CLIENT_IDS:
        raise ConnectParamsError(
            "invalid connect params: at /client/id: must be equal to one of the allowed values"
        )
    return parsed


def client_dict(params: ConnectParams) -> dict[str, Any]:
    """`client` as the camelCase dict clients sent (for presence and logs)."""
    out: dict[str, Any] = msgspec.to_builtins(params.client)
    return out


def negotiate(min_protocol: int, max_protocol: int) -> int | None:
    """The highest version both sides speak, or None."""
    for version in range(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION - 1, -1):
        if min_protocol <= version <= max_protocol:
            return version
    return None
