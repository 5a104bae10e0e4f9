"""Wire frames: decoding and validating what clients send, encoding what the gateway sends.

Frames are JSON text. Inbound requests decode straight into a strict `RequestFrame`
(msgspec validates types and rejects unknown keys in C, which keeps the hot path fast).
Outbound frames are encoded once; a broadcast event is encoded once for all clients and
only the per-connection `seq` is spliced in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from moltis_desktop.protocol.constants import ErrorCode

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
"""A string that may not be empty (for frame and method parameters)."""


class RequestFrame(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="req", tag_field="type"
):
    """`{type:"req", id, method, params?}`."""

    id: NonEmpty
    method: NonEmpty
    params: Any = None
    traceparent: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class _OtherFrame(msgspec.Struct, frozen=True, tag_field="type"):
    """A `res` or `event` frame from a client: well-formed, but not something a client may send."""


class _ResponseFrame(_OtherFrame, frozen=True, tag="res"):
    id: str = ""


class _EventFrame(_OtherFrame, frozen=True, tag="event"):
    event: str = ""


# A union makes the `type` tag mandatory (a lone tagged Struct would accept a frame without it).
_REQUEST_DECODER = msgspec.json.Decoder(RequestFrame | _ResponseFrame | _EventFrame)
_ANY_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
INVALID_REQUEST_ID = "invalid"
"""The id an error answer carries when the request's own id cannot be read."""


class FrameError(Exception):
    """An inbound frame that is not a valid request. `request_id` is the id to answer with."""

    def __init__(
        self, message: str, request_id: str = INVALID_REQUEST_ID, *, close_reason: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.close_reason = close_reason or "invalid request frame"
        """The WebSocket close reason when this ends a handshake."""


def decode_request(data: bytes | str) -> RequestFrame:
    """Decode and validate one inbound frame; raise `FrameError` saying what is wrong."""
    try:
        frame = _REQUEST_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise FrameError(f"invalid request frame: {_describe(exc)}", _salvage_id(data)) from None
    except msgspec.DecodeError:
        message = "invalid request frame: not valid JSON"
        raise FrameError(message, close_reason=message) from None
    if not isinstance(frame, RequestFrame):
        raise FrameError(
            "invalid request frame: clients may only send `req` frames", _salvage_id(data)
        )
    return frame


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Expected `object`, got"):
        return "a frame must be a JSON object"
    if "`$.type`" in text:
        return '`type` must be "req"'
    return text


def _salvage_id(data: bytes | str) -> str:
    # The frame is invalid, but when it is an object with a usable id the client still
    # deserves an answer it can match to its request.
    try:
        obj = _ANY_DECODER.decode(data)
    except msgspec.DecodeError:
        return INVALID_REQUEST_ID
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, str) and rid:
            return rid
    return INVALID_REQUEST_ID


def decode_json(data: bytes | str) -> Any:
    """Decode any JSON value (raises `msgspec.DecodeError`)."""
    return _ANY_DECODER.decode(data)


def encode_json(value: Any) -> bytes:
    """Encode a value as compact JSON."""
    return _ENCODER.encode(value)


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """The `error` object of a failed `res`."""

    code: str
    message: str
    details: Any = None
    retryable: bool | None = None
    retry_after_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        if self.retryable is not None:
            out["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            out["retryAfterMs"] = self.retry_after_ms
        return out


class GatewayError(Exception):
    """Raised by a method handler to answer with `ok:false`."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        payload: Any = None,
    ) -> None:
        super().__init__(message)
        self.shape = ErrorShape(code, message, details, retryable, retry_after_ms)
        self.payload = payload
        """Sent beside the error (OpenClaw's final `agent` answers carry both)."""

    @classmethod
    def invalid(cls, message: str, **kwargs: Any) -> GatewayError:
        """An `INVALID_REQUEST` error."""
        return cls(ErrorCode.INVALID_REQUEST, message, **kwargs)


def encode_ok(request_id: str, payload: Any) -> bytes:
    """A successful `res`. `payload` may be a `msgspec.Raw` of pre-encoded JSON."""
    return _ENCODER.encode({"type": "res", "id": request_id, "ok": True, "payload": payload})


def encode_error(request_id: str, error: ErrorShape, payload: Any = None) -> bytes:
    """A failed `res` (OpenClaw's two-stage replies may carry a payload beside the error)."""
    frame: dict[str, Any] = {"type": "res", "id": request_id, "ok": False, "error": error.to_wire()}
    if payload is not None:
        frame["payload"] = payload
    return _ENCODER.encode(frame)


def encode_event_body(
    event: str, payload: Any = None, state_version: dict[str, int] | None = None
) -> bytes:
    """An event frame without `seq`; `with_seq` adds each connection's own number."""
    frame: dict[str, Any] = {"type": "event", "event": event}
    if payload is not None:
        frame["payload"] = payload
    if state_version is not None:
        frame["stateVersion"] = state_version
    return _ENCODER.encode(frame)


def with_seq(body: bytes, seq: int) -> bytes:
    """Splice `"seq":N` into an encoded event body (cheap: no re-encoding per client)."""
    return b'%s,"seq":%d}' % (body[:-1], seq)


Raw = msgspec.Raw
