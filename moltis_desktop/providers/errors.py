"""The `ProviderError`s (the class is part of the neutral vocabulary, in `base.py`) that tell
a user what to do about a failed call: a missing key, an HTTP status or a stream's error
event, a connection that failed; and a tool call's arguments read without failing the turn."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from moltis_desktop.providers.base import ErrorKind, ProviderError
from moltis_desktop.providers.resolved import ProviderConfig

_LOGGER = logging.getLogger(__name__)

INVALID_ARGUMENTS = "_invalid_arguments"
"""Key of the arguments of a tool call whose JSON could not be read (holds the raw text)."""

_OVERFLOW_MARKERS = (
    "prompt is too long",
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "input is too long",
)


def missing_key_error(config: ProviderConfig) -> ProviderError:
    return ProviderError(config.id, "auth", f"no API key for {config.id}: {config.key_hint}")


def status_error(
    config: ProviderConfig,
    status: int | None,
    detail: str,
    *,
    model: str = "",
    error_type: str = "",
    code: str = "",
    retry_after_s: float | None = None,
    listing: bool = False,
) -> ProviderError:
    """The error for an HTTP status, or for an error event inside a stream (status None,
    classified by its `error_type`/`code`; unknown ones count as server errors)."""
    pid, retries = config.id, config.max_retries
    after = f" after {retries} retries" if retries else ""
    kind: ErrorKind
    lowered = f"{detail} {error_type} {code}".lower()
    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        kind = "auth"
        if status == 403 or error_type == "permission_error":
            message = f"{pid} refused access (403): {detail}; check the key's permissions"
        else:
            message = (
                f"{pid} rejected the API key (401): check `moltis secrets get "
                f"{config.api_key_secret}`"
            )
    elif status == 404 or error_type == "not_found_error":
        kind = "not_found"
        if listing:
            message = (
                f"{pid} has no model list at {config.base_url} (404): check "
                f"providers.{pid}.base_url, or set providers.{pid}.discover_models = false"
            )
        else:
            message = (
                f"{pid} does not know model {model!r} (404): run `moltis models` to see the "
                "available ones"
            )
    elif status == 413 or (
        status in (None, 400, 422) and any(m in lowered for m in _OVERFLOW_MARKERS)
    ):
        kind = "context_overflow"
        message = (
            f"the conversation is too long for {pid}/{model} ({detail}): compact it with "
            "/compact or start over with /new"
        )
    elif status == 429 or "rate_limit" in f"{error_type} {code}":
        kind = "rate_limit"
        message = (
            f"{pid} is rate limiting requests (429){after}: wait a moment and try again, or "
            "configure a fallback model"
        )
    elif status == 408 or error_type == "timeout_error":
        kind = "timeout"
        message = f"{pid} timed out the request{after}: try again"
    elif status is None or status >= 500:
        kind = "server"
        shown = status if status is not None else error_type or "stream error"
        message = (
            f"{pid} failed with a server error ({shown}){after}: {detail}. Try again later, or "
            "configure a fallback model"
        )
    else:
        kind = "bad_request"
        message = f"{pid} rejected the request ({status}): {detail}"
    return ProviderError(pid, kind, message, status=status, retry_after_s=retry_after_s)


def connection_error(config: ProviderConfig, reason: str, *, timed_out: bool) -> ProviderError:
    pid = config.id
    if timed_out:
        return ProviderError(
            pid,
            "timeout",
            f"{pid} did not answer within {config.timeout_s:g} s: try again, or raise "
            f"providers.{pid}.timeout_s",
        )
    where = f"cannot reach {pid} at {config.base_url}"
    if config.preset.local:
        advice = f"is {config.preset.label or pid} running on this machine?"
    else:
        advice = f"check the network and providers.{pid}.base_url"
    return ProviderError(pid, "unreachable", f"{where} ({reason}): {advice}")


def transport_errors() -> tuple[type[Exception], type[Exception]]:
    """`(TimeoutException, HTTPError)` of the HTTP library the SDKs use (loaded with them):
    errors while reading a stream can escape the SDKs unwrapped."""
    http = sys.modules.get("httpx2") or sys.modules.get("httpx")
    if http is None:  # no SDK loaded yet, so nothing of theirs can be raised
        return (_NeverRaisedError, _NeverRaisedError)
    return (http.TimeoutException, http.HTTPError)


class _NeverRaisedError(Exception):
    pass


def stream_transport_error(config: ProviderConfig, exc: Exception, *, model: str) -> ProviderError:
    """The error for a connection that failed while an answer was streaming (one of
    `transport_errors()`)."""
    if isinstance(exc, transport_errors()[0]):
        return connection_error(config, "timed out", timed_out=True)
    return status_error(config, None, f"the connection dropped mid-answer ({exc!r})", model=model)


def error_details(body: object, fallback: str) -> tuple[str, str, str]:
    """`(type, code, message)` from an API error body (`{"error": {...}}` or the inner
    object, as the SDKs hand it over)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            message = inner.get("message") or fallback
            return str(inner.get("type") or ""), str(inner.get("code") or ""), str(message)
        if isinstance(inner, str):
            return "", "", inner
    return "", "", fallback


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a `retry-after` header (seconds form only)."""
    if not headers:
        return None
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


def parse_tool_arguments(provider_id: str, name: str, raw: str) -> dict[str, Any]:
    """A tool call's JSON arguments. Text that is not a JSON object (a model cut off by
    max_tokens, a small local model) is handed on as `{"_invalid_arguments": raw}`, so the
    tool's validation tells the model what went wrong instead of the turn failing."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    _LOGGER.warning("%s sent arguments for tool %s that are not a JSON object", provider_id, name)
    return {INVALID_ARGUMENTS: raw}
