"""The voice model manager: the model store (`modelstore.manager`) over the voice catalog
(`voice.catalog`), speaking of "voice models" and `moltis models voice`.

Cache layout: `<cache_dir>/<kind dir>/<name>/` (kind dirs `whisper`, `piper`, `wake`; see
`modelstore.manager` for the manifest, resumes, mirror and checksum policy). A model that a
Python package ships (`VoiceModel.package`) is found and used where it is; a downloaded
copy wins over it. Errors are `VoiceError`s (`ModelMissingError` for a missing model).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias

from moltis_desktop.modelstore import manager as store
from moltis_desktop.modelstore.catalog import Wording
from moltis_desktop.modelstore.manager import (
    MANIFEST,
    MIRROR_ENV,
    Progress,
    State,
    mirror_from,
    package_path,
)
from moltis_desktop.voice.catalog import KIND_DIRS, VoiceModel, default_catalog
from moltis_desktop.voice.errors import ModelChecksumError, ModelMissingError, VoiceModelError

__all__ = [
    "KIND_DIRS",
    "MANIFEST",
    "MIRROR_ENV",
    "WORDING",
    "ModelManager",
    "ModelStatus",
    "Progress",
    "State",
    "manager_for",
    "mirror_from",
    "package_path",
]

WORDING = Wording(
    noun="voice model",
    command="moltis models voice",
    mirror_setting="voice.model_mirror",
    install_hint="pip install 'moltis-desktop[voice]'",
    error=VoiceModelError,
    missing=ModelMissingError,
    checksum=ModelChecksumError,
)
"""How voice names its models in messages, and the errors it raises (VoiceErrors)."""

ModelStatus: TypeAlias = store.ModelStatus[VoiceModel]


class ModelManager(store.ModelManager[VoiceModel]):
    """Finds, downloads, verifies and removes voice models in `cache_dir`."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        catalog: Mapping[str, VoiceModel] | None = None,
        mirror: str = "",
    ) -> None:
        super().__init__(
            cache_dir,
            catalog=default_catalog() if catalog is None else catalog,
            mirror=mirror,
            wording=WORDING,
        )


def manager_for(cache_root: Path, configured_mirror: str = "") -> ModelManager:
    """The manager the CLI and the runtime use: `<cache_root>/voice`, with the mirror from
    `MOLTIS_MODEL_MIRROR` or else `voice.model_mirror`."""
    return ModelManager(cache_root / "voice", mirror=mirror_from(configured_mirror))
