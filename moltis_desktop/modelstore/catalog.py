"""What a catalog entry tells the model store: its files and their home URLs, and the Python
packages that may ship it; and the words a store's user puts in its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from moltis_desktop.modelstore.errors import ChecksumError, ModelMissingError, ModelStoreError


@dataclass(frozen=True)
class ModelFile:
    """One file of a model."""

    name: str
    url: str
    sha256: str = ""
    """Pinned SHA-256 (lowercase hex), or "" when not pinned (see `modelstore.manager`:
    checksums)."""
    size: int = 0
    """Approximate size in bytes (0: unknown); the server's figure is the one used."""


@dataclass(frozen=True)
class PackageSource:
    """Python packages that ship a model, found without importing them.

    One part: the model (a file or a directory) is `parts[0]`, used where it is. Several
    parts: a file split in byte order across packages (PyPI caps a file's size), joined
    into one file in the cache on first use and checked against `sha256` (the joined
    file's hash), since the parts come from several packages.
    """

    parts: tuple[tuple[str, str], ...]
    """(import name, path inside the package) of each part, in order."""
    sha256: str = ""
    """SHA-256 of the whole (joined) file; "" takes the package's copy as it is."""

    @property
    def distributions(self) -> tuple[str, ...]:
        """The packages' names on PyPI (import names with `-` for `_`)."""
        return tuple(dict.fromkeys(name.replace("_", "-") for name, _ in self.parts))

    @property
    def multipart(self) -> bool:
        return len(self.parts) > 1


class CatalogEntry(Protocol):
    """What the store needs of a catalog's model (voice's `VoiceModel`, the local LLMs'
    `LocalModel`)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def files(self) -> tuple[ModelFile, ...]: ...
    @property
    def entry(self) -> str:
        """The file `path()` points at ("" = the model's directory)."""
        ...

    @property
    def cache_path(self) -> str:
        """The model's directory under the store's, `/`-separated (`whisper/tiny.en`)."""
        ...

    @property
    def package_source(self) -> PackageSource | None: ...
    @property
    def name(self) -> str:
        """A short name users may type instead of the id."""
        ...

    def describe(self) -> dict[str, Any]:
        """The model's fields in the protocol's shape (`id`, `title`, `sizeBytes`, …)."""
        ...


@dataclass(frozen=True)
class Wording:
    """How one user of the store names things in its messages, and the errors it raises."""

    noun: str = "model"
    """`voice model`, `local model`."""
    command: str = "moltis models"
    """The CLI command that manages these models (`moltis models voice`)."""
    mirror_setting: str = "MOLTIS_MODEL_MIRROR"
    """The setting that names a mirror (`voice.model_mirror`)."""
    install_hint: str = ""
    """What to run when a package-only model's package is missing ("" = `pip install`
    the package)."""
    error: type[ModelStoreError] = ModelStoreError
    missing: type[ModelMissingError] = ModelMissingError
    checksum: type[ChecksumError] = ChecksumError

    def download_hint(self, model_id: str) -> str:
        return f"`{self.command} download {model_id}`"
