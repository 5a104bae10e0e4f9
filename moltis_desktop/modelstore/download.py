"""A model's files over HTTP into the cache: resumable, checksum-verified, clear errors."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from moltis_desktop import __version__
from moltis_desktop.modelstore.catalog import Wording
from moltis_desktop.modelstore.errors import ChecksumError, ModelStoreError

if TYPE_CHECKING:
    from moltis_desktop.modelstore.catalog import ModelFile

_LOGGER = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
"""Read and write size while streaming a file."""
MAX_ATTEMPTS = 4
"""Tries per file; a retry happens only when the previous try made progress."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

ByteProgress = Callable[[int, int | None], None]
"""Called with (bytes of this file so far, its size when known)."""


@dataclass(frozen=True)
class Fetched:
    """A file fully downloaded into its `.part` and checked."""

    size: int
    """Bytes."""
    sha256: str
    checksum: str
    """How it was checked: `pinned` (the catalog's hash), `server` (the hash the server
    stated) or `first-download` (nothing to check against: the hash is recorded)."""


class _InterruptedError(Exception):
    """The transfer stopped part-way; what arrived is kept in the `.part` file."""


class _RestartError(Exception):
    """The `.part` file cannot be resumed (the server disagrees about it): start over."""


@dataclass
class _Totals:
    """Progress across a model's files: what each file has so far and its size."""

    done: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.sizes.values())

    def so_far(self) -> int:
        return min(sum(self.done.values()), self.total())


async def download_files(
    files: Sequence[tuple[ModelFile, str]],
    directory: Path,
    *,
    label: str,
    client_timeout: aiohttp.ClientTimeout,
    progress: Callable[[int, int], None] | None = None,
    wording: Wording = Wording(),  # noqa: B008 - frozen
) -> list[dict[str, Any]]:
    """Download a model's (file, url) pairs into `directory`, one after the other; the
    manifest entries of the files. `progress(done, total)` counts bytes across them all.

    A checksum mismatch removes `directory` (when it holds no manifest): a failed first
    download leaves nothing behind. Other failures keep the `.part` files to resume.
    """
    os.makedirs(directory, exist_ok=True)
    totals = _Totals(sizes={f.name: f.size for f, _ in files})

    def report() -> None:
        if progress is not None:
            progress(totals.so_far(), totals.total())

    entries: list[dict[str, Any]] = []
    headers = {"User-Agent": f"moltis-desktop/{__version__}"}
    # trust_env: HTTPS_PROXY / NO_PROXY apply, as to any other download on this machine.
    async with aiohttp.ClientSession(
        timeout=client_timeout, headers=headers, trust_env=True
    ) as session:
        for file, url in files:
            final, part = directory / file.name, directory / f"{file.name}.part"
            if final.exists():
                # Complete but never recorded (a try that died before the manifest): it is
                # checked again like any partial file, which costs one 416 answer.
                os.replace(final, part)

            def on_bytes(done: int, size: int | None, name: str = file.name) -> None:
                totals.done[name] = done
                if size is not None:
                    totals.sizes[name] = size
                report()

            try:
                fetched = await fetch_file(
                    session, url, part, pinned=file.sha256, label=f"{label}/{file.name}",
                    progress=on_bytes, wording=wording,
                )  # fmt: skip
            except ChecksumError:
                # The bad file is gone; leave no half-model behind either.
                if not (directory / "manifest.json").exists():
                    shutil.rmtree(directory, ignore_errors=True)
                raise
            os.replace(part, final)
            totals.sizes[file.name] = totals.done[file.name] = fetched.size
            entries.append({"name": file.name, "size": fetched.size, "sha256": fetched.sha256,
                            "checksum": fetched.checksum, "url": url})  # fmt: skip
    report()
    return entries


def reach_error(
    url: str,
    exc: BaseException,
    wording: Wording = Wording(),  # noqa: B008 - frozen
) -> ModelStoreError:
    host = urlsplit(url).netloc or url
    detail = str(exc) or type(exc).__name__
    return wording.error(
        f"cannot reach {host}: {detail}; check your network or set {wording.mirror_setting}"
    )


def server_sha256(responses: Sequence[aiohttp.ClientResponse]) -> str:
    """The SHA-256 a server states for the file, or "".

    Hugging Face answers `resolve/` with the LFS object's SHA-256 in `X-Linked-Etag` (on the
    redirect, before the CDN) and usually in `ETag` too; huggingface_hub trusts the same
    headers (`file_download.py`, `_get_metadata_or_catch_error`). Git blobs get a 40-hex
    SHA-1 ETag, and weak ETags promise nothing about the bytes: neither counts.
    """
    for header in ("X-Linked-Etag", "ETag"):
        for response in responses:
            value = response.headers.get(header, "").strip()
            if value.startswith("W/"):
                continue
            value = value.strip('"').lower()
            if _HEX64.fullmatch(value):
                return value
    return ""


def _parse_content_range(value: str) -> tuple[int | None, int | None]:
    """(first byte, full size) from a `Content-Range` header; None where absent."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _size(path: Path) -> int:
    # One stat, not worth a thread: async callers use it between network reads.
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _drop(path: Path) -> None:
    path.unlink(missing_ok=True)


def _hash_file(path: Path) -> hashlib._Hash:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            hasher.update(chunk)
    return hasher


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, lowercase hex."""
    return _hash_file(path).hexdigest()


async def fetch_file(
    session: aiohttp.ClientSession,
    url: str,
    part: Path,
    *,
    pinned: str,
    label: str,
    progress: ByteProgress,
    wording: Wording = Wording(),  # noqa: B008 - frozen
) -> Fetched:
    """Download `url` into `part`, resuming from what `part` already holds.

    Retries while each try makes progress (a dropped connection mid-file), sending
    `Range: bytes=<n>-`; a 206 answer appends, a 200 starts over. The finished file is
    checked against `pinned`, else the hash the server states; on a mismatch `part` is
    deleted and `wording.checksum` raised. `label` names the file in messages.
    """
    attempt = 0
    while True:
        attempt += 1
        before = _size(part)
        try:
            return await _attempt(
                session, url, part, pinned=pinned, label=label, progress=progress,
                wording=wording,
            )  # fmt: skip
        except _RestartError:
            if attempt >= MAX_ATTEMPTS:
                raise wording.error(
                    f"cannot resume {label} from {url}: the server keeps changing the file; "
                    "try again later, or check the mirror"
                ) from None
            _LOGGER.info("%s: the partial download does not match the server's; restarting", label)
        except _InterruptedError as exc:
            after = _size(part)
            if after <= before or attempt >= MAX_ATTEMPTS:
                raise wording.error(
                    f"the download of {label} was interrupted ({exc}) at {after} bytes; run "
                    "the download again to resume it, or check your network"
                ) from None
            _LOGGER.info("%s interrupted at %d bytes (%s); resuming", label, after, exc)
            await asyncio.sleep(min(0.25 * attempt, 1.0))


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    part: Path,
    *,
    pinned: str,
    label: str,
    progress: ByteProgress,
    wording: Wording = Wording(),  # noqa: B008 - frozen
) -> Fetched:
    offset = _size(part)
    # Hashing what is already there may read hundreds of MB: keep it off the event loop.
    hasher = await asyncio.to_thread(_hash_file, part) if offset else hashlib.sha256()
    # identity: byte offsets and sizes must be those of the file itself, not of a gzip.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = await session.get(url, headers=headers)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise reach_error(url, exc, wording) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _InterruptedError(str(exc) or type(exc).__name__) from None
    async with response:
        stated = server_sha256([*response.history, response])
        if response.status == 416 and offset:
            # The `.part` already holds every byte (a try cut off after the last chunk).
            _, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if total != offset:
                _drop(part)
                raise _RestartError
            size = offset
        else:
            _check_status(response, url, label, wording)
            if response.status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range", ""))
                if start != offset:
                    _drop(part)
                    raise _RestartError
                mode = "ab"
            else:
                # A 200 to a Range request: the server does not do ranges; start over.
                offset, total, mode = 0, response.content_length, "wb"
                hasher = hashlib.sha256()
            size = await _stream(
                response, part, mode=mode, offset=offset, total=total, hasher=hasher,
                progress=progress,
            )  # fmt: skip
    expected = pinned or stated
    got = hasher.hexdigest()
    if expected and got != expected.lower():
        _drop(part)
        raise wording.checksum(
            f"{label}: checksum mismatch (expected {expected}, got {got}); try again, or "
            "check the mirror"
        )
    checksum = "pinned" if pinned else "server" if stated else "first-download"
    return Fetched(size, got, checksum)


async def _stream(
    response: aiohttp.ClientResponse,
    part: Path,
    *,
    mode: str,
    offset: int,
    total: int | None,
    hasher: hashlib._Hash,
    progress: ByteProgress,
) -> int:
    done = offset
    progress(done, total)
    with part.open(mode) as fh:
        try:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                fh.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                progress(done, total)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _InterruptedError(str(exc) or type(exc).__name__) from None
    if total is not None and done != total:
        raise _InterruptedError(f"got {done} of {total} bytes")
    return done


def _check_status(response: aiohttp.ClientResponse, url: str, label: str, wording: Wording) -> None:
    status = response.status
    if status in (200, 206):
        return
    reason = response.reason or ""
    if status == 404:
        raise wording.error(
            f"{label} is not at {url} (HTTP 404); check {wording.mirror_setting}, or update "
            "Moltis if the model has moved"
        )
    raise wording.error(
        f"cannot download {label} from {url}: HTTP {status} {reason}".rstrip()
        + f"; check your network or set {wording.mirror_setting}"
    )
