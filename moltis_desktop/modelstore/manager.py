"""The model manager: the cache models download into, lookup, download, verify, join and
remove. The models themselves (ids, files, home URLs) are each catalog's (`voice.catalog`,
`providers.local_catalog`); a `Wording` gives each user its own words in messages.

A model that Python packages ship (`CatalogEntry.package_source`) is found and used without
importing them (`importlib.util.find_spec`); one split across several packages is joined
into one file in the cache on first use (`materialize`), checked against the pinned hash of
the whole. A downloaded copy wins over a package's.

Cache layout: `<cache_dir>/<model.cache_path>/` with the model's files and a `manifest.json`
written atomically, last: a model counts as downloaded only when its manifest exists.
Files download into `<file>.part` and are resumed from there with an HTTP Range request.

Mirror: with `mirror` (env `MOLTIS_MODEL_MIRROR`, else the user's setting) every file is
fetched from `<mirror>/<model id>/<file name>`, e.g.
`https://models.example.org/voice/whisper/tiny.en/model.bin`, instead of its home site.

Checksum policy. There is no network at build time to learn upstream hashes, so:

1. a file whose catalog entry pins a SHA-256 must match it;
2. otherwise it must match the SHA-256 the server states: Hugging Face sends the LFS
   object's hash in `X-Linked-Etag` / `ETag` (a 64-hex ETag, quotes stripped), which is
   what huggingface_hub relies on too;
3. otherwise (small git files, a plain mirror) the computed hash is recorded in the
   manifest at the first download (trust on first download).

`ModelManager.verify` checks the cached files against the manifest. A mismatch deletes the
copy and raises the user's checksum error: a bad file never stays in the cache.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import difflib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import aiohttp

from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.modelstore.catalog import CatalogEntry, ModelFile, Wording
from moltis_desktop.modelstore.download import download_files, file_sha256
from moltis_desktop.modelstore.errors import ChecksumError
from moltis_desktop.modelstore.packages import find_parts, join_parts, package_path

_LOGGER = logging.getLogger(__name__)

M = TypeVar("M", bound=CatalogEntry)
State = Literal["downloaded", "package", ""]
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) across every file of a model."""

MANIFEST = "manifest.json"
MIRROR_ENV = "MOLTIS_MODEL_MIRROR"
"""Environment variable that overrides the configured mirror."""
CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0
"""Longest silence from a server mid-download before the try counts as interrupted."""

__all__ = ["MANIFEST", "MIRROR_ENV", "ModelManager", "ModelStatus", "mirror_from", "package_path"]


@dataclass(frozen=True)
class ModelStatus(Generic[M]):
    """A catalog model and whether (and where) it is installed."""

    model: M
    state: State
    """`downloaded` (in the cache), `package` (shipped by Python packages, or joined from
    their parts into the cache) or "" (absent)."""
    path: Path | None = None
    """The installed model; for a model in several package parts not joined yet, its
    first part (`ModelManager.materialize` gives the one file)."""
    joined: bool = True
    """False while a model in several package parts has not been joined into one file."""

    @property
    def id(self) -> str:
        return self.model.id

    def to_dict(self) -> dict[str, Any]:
        """The protocol's (and `--json`'s) shape: the model's fields, `state` and `path`."""
        return {
            **self.model.describe(),
            "state": self.state,
            "path": str(self.path) if self.path is not None else None,
        }


def mirror_from(configured: str, env: Mapping[str, str] | None = None) -> str:
    """The mirror in effect: `MOLTIS_MODEL_MIRROR` wins over the config's value."""
    env = os.environ if env is None else env
    return (env.get(MIRROR_ENV) or configured).strip()


class ModelManager(Generic[M]):
    """Finds, downloads, verifies, joins and removes the models of one catalog in
    `cache_dir`."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        catalog: Mapping[str, M],
        mirror: str = "",
        wording: Wording = Wording(),  # noqa: B008 - frozen
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.catalog: dict[str, M] = dict(catalog)
        self.mirror = mirror.strip().rstrip("/")
        self.wording = wording
        self.connect_timeout_s = CONNECT_TIMEOUT_S
        self.read_timeout_s = READ_TIMEOUT_S
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[Path]] = {}

    # ------------------------------------------------------------ lookup

    def model(self, model_id: str) -> M:
        """The catalog entry; the user's error (naming close matches) for an unknown id."""
        found = self.catalog.get(model_id.strip())
        if found is not None:
            return found
        known = sorted(self.catalog)
        by_name = {m.name: m.id for m in self.catalog.values()}
        close = difflib.get_close_matches(model_id, known, n=3, cutoff=0.6)
        close += [by_name[n] for n in difflib.get_close_matches(model_id, list(by_name), n=3)]
        close = list(dict.fromkeys(close))[:3]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise self.wording.error(
            f"unknown {self.wording.noun} {model_id!r}: {hint}(known: {', '.join(known)}; see "
            f"`{self.wording.command} list`)"
        )

    def model_dir(self, model: M) -> Path:
        return self.cache_dir.joinpath(*model.cache_path.split("/"))

    def _target(self, model: M) -> Path:
        directory = self.model_dir(model)
        return directory / model.entry if model.entry else directory

    def _copy(self, model: M) -> tuple[State, Path] | None:
        """The cache's copy: ("downloaded" or, joined from packages, "package", path)."""
        manifest = self.model_dir(model) / MANIFEST
        if not manifest.is_file():
            return None
        target = self._target(model)
        if not target.exists():
            return None
        joined = (self.manifest(model.id) or {}).get("source") == "package"
        return ("package" if joined else "downloaded"), target

    def _package_parts(self, model: M) -> builtins.list[Path] | None:
        source = model.package_source
        return None if source is None else find_parts(source)

    def status(self, model_id: str) -> ModelStatus[M]:
        model = self.model(model_id)
        copy = self._copy(model)
        if copy is not None:
            return ModelStatus(model, copy[0], copy[1])
        parts = self._package_parts(model)
        if parts is not None:
            return ModelStatus(model, "package", parts[0], joined=len(parts) == 1)
        return ModelStatus(model, "")

    def list(self) -> builtins.list[ModelStatus[M]]:
        """Every catalog model and its installed state."""
        return [self.status(model_id) for model_id in self.catalog]

    def path(self, model_id: str) -> Path | None:
        """Where the model is installed (no network, no reading: `stat` only); None when it
        is not. For a model in several package parts not joined yet, the first part: use
        `materialize` for the one file."""
        return self.status(model_id).path

    def require(self, model_id: str) -> Path:
        """`path()`, or the user's missing-model error saying how to download it."""
        found = self.path(model_id)
        if found is None:
            raise self._missing(model_id)
        return found

    def _missing(self, model_id: str) -> Exception:
        return self.wording.missing(
            f"the {self.wording.noun} {model_id} is not installed: run "
            f"{self.wording.download_hint(model_id)} (it needs the network once)"
        )

    @property
    def downloading(self) -> frozenset[str]:
        """Ids of the models being downloaded (or joined) right now."""
        return frozenset(self._tasks)

    def file_url(self, model: M, file: ModelFile) -> str:
        """Where a file comes from: its home URL, or `<mirror>/<model id>/<file name>`."""
        return f"{self.mirror}/{model.id}/{file.name}" if self.mirror else file.url

    # ------------------------------------------------------------ join package parts

    async def materialize(self, model_id: str, progress: Progress | None = None) -> Path:
        """The installed model as one path on disk: a downloaded copy, a package's file, or
        the package parts joined into the cache (once, in a worker thread, checked against
        the pinned hash). The missing-model error when it is not installed."""
        model = self.model(model_id)
        status = self.status(model.id)
        if status.path is None:
            raise self._missing(model.id)
        if status.joined:
            return status.path
        async with self._lock(model):
            return await self._join(model, progress)

    def _lock(self, model: M) -> asyncio.Lock:
        return self._locks.setdefault(model.id, asyncio.Lock())

    async def _join(self, model: M, progress: Progress | None) -> Path:
        """Join the package parts (the model's lock held)."""
        status = self.status(model.id)
        if status.path is None:
            raise self._missing(model.id)
        if status.joined:
            return status.path  # joined while we waited for the lock
        source = model.package_source
        parts = self._package_parts(model)
        assert source is not None
        assert parts is not None
        target = self._target(model)
        _LOGGER.info("%s %s: joining %d package parts into %s", self.wording.noun, model.id,
                     len(parts), target)  # fmt: skip
        sha = await asyncio.to_thread(
            join_parts, parts, target, sha256=source.sha256, label=model.id,
            packages=source.distributions, wording=self.wording, progress=progress,
        )  # fmt: skip
        entry = {
            "name": target.name,
            "size": target.stat().st_size,
            "sha256": sha,
            "checksum": "pinned" if source.sha256 else "first-download",
        }
        self._write_manifest(model, [entry], source="package",
                             packages=builtins.list(source.distributions))  # fmt: skip
        return target

    # ------------------------------------------------------------ download

    async def download(self, model_id: str, progress: Progress | None = None) -> Path:
        """Download the model (if it is not installed) and return its one path (as
        `materialize`: package parts are joined, or when they are damaged and the model
        has files to download, it is downloaded instead).

        `progress(done, total)` follows the bytes of all its files. Concurrent calls for
        one model share one download (later callers wait for it).
        """
        model = self.model(model_id)
        async with self._lock(model):
            status = self.status(model.id)
            if status.path is not None and status.joined:
                return status.path
            if status.path is not None:
                try:
                    return await self._join(model, progress)
                except ChecksumError as exc:
                    if not model.files:
                        raise
                    _LOGGER.warning("%s; downloading it instead", exc)
            if not model.files:
                raise self.wording.missing(
                    f"{model.id} ships with the Python package "
                    f"{' '.join(self._distributions(model))}, which is not installed: "
                    f"{self._install_hint(model)}"
                )
            return await self._download(model, progress)

    def start_download(self, model_id: str, progress: Progress | None = None) -> asyncio.Task[Path]:
        """`download` in a task the manager keeps (and `aclose` cancels); the task already
        running for that model when there is one."""
        model = self.model(model_id)
        running = self._tasks.get(model.id)
        if running is not None:
            return running
        task = asyncio.get_running_loop().create_task(
            self.download(model.id, progress), name=f"model-download-{model.id}"
        )
        self._tasks[model.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(model.id, None))
        return task

    async def aclose(self) -> None:
        """Cancel the downloads `start_download` began (their `.part` files stay, to
        resume)."""
        tasks = builtins.list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _download(self, model: M, progress: Progress | None) -> Path:
        noun = self.wording.noun
        _LOGGER.info("downloading %s %s%s", noun, model.id,
                     f" from {self.mirror}" if self.mirror else "")  # fmt: skip
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s
        )
        directory = self.model_dir(model)
        # A copy joined from packages makes way (its manifest goes first).
        (directory / MANIFEST).unlink(missing_ok=True)
        entries = await download_files(
            [(f, self.file_url(model, f)) for f in model.files],
            directory,
            label=model.id,
            client_timeout=timeout,
            progress=progress,
            wording=self.wording,
        )
        self._write_manifest(model, entries)
        _LOGGER.info("%s %s downloaded (%d bytes)", noun, model.id,
                     sum(e["size"] for e in entries))  # fmt: skip
        return self.require(model.id)

    def _write_manifest(self, model: M, files: builtins.list[dict[str, Any]], **extra: Any) -> None:
        manifest = {
            "version": 1,
            "id": model.id,
            "title": model.title,
            **{k: v for k, v in model.describe().items() if k == "kind"},
            "source": "download",
            "mirror": self.mirror,
            "downloadedAt": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **extra,
            "files": files,
        }
        atomic_write_text(
            self.model_dir(model) / MANIFEST, json.dumps(manifest, indent=2) + "\n", mode=0o644
        )

    # ------------------------------------------------------------ verify, remove

    def manifest(self, model_id: str) -> dict[str, Any] | None:
        """The cached copy's manifest, or None."""
        path = self.model_dir(self.model(model_id)) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def verify(self, model_id: str) -> ModelStatus[M]:
        """Check a cached copy's files against its manifest (reads them all: slow for big
        models; run it off the event loop). A package's own files are taken as they are.

        A missing or changed file removes the cached copy and raises the checksum error.
        """
        status = self.status(model_id)
        if self._copy(status.model) is None:
            if status.state == "":
                self.require(model_id)
            return status
        directory = self.model_dir(status.model)
        manifest = self.manifest(model_id) or {}
        for entry in manifest.get("files", []):
            name, expected = str(entry.get("name", "")), str(entry.get("sha256", ""))
            file = directory / name
            got = file_sha256(file) if file.is_file() else "missing"
            if got != expected:
                self._remove_copy(status.model)
                raise self.wording.checksum(
                    f"{model_id}/{name}: checksum mismatch (expected {expected}, got {got}); "
                    f"the copy was removed: run {self.wording.download_hint(model_id)}"
                )
        return status

    def remove(self, model_id: str) -> bool:
        """Delete the cached copy (and any partial download); True if there was a copy.
        A model that only Python packages provide cannot be removed here."""
        model = self.model(model_id)
        if model.id in self._tasks:
            raise self.wording.error(
                f"{model.id} is downloading: wait for it to finish, then remove it"
            )
        directory = self.model_dir(model)
        had_copy = (directory / MANIFEST).is_file()
        if not directory.exists() and self._package_parts(model) is not None:
            raise self.wording.error(
                f"{model.id} ships with the Python package "
                f"{' '.join(self._distributions(model))}: uninstall that package to remove it"
            )
        self._remove_copy(model)
        return had_copy

    def _remove_copy(self, model: M) -> None:
        directory = self.model_dir(model)
        # The manifest goes first: a removal cut short leaves an uninstalled model.
        (directory / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        _LOGGER.info("%s %s removed from the cache", self.wording.noun, model.id)

    @staticmethod
    def _distributions(model: M) -> tuple[str, ...]:
        source = model.package_source
        return source.distributions if source is not None else ("?",)

    def _install_hint(self, model: M) -> str:
        return self.wording.install_hint or f"pip install {' '.join(self._distributions(model))}"
