"""The model store's errors; each user of the store may raise subclasses of its own (a
`Wording` names them), so its callers catch what they always caught."""

from __future__ import annotations

from moltis_desktop.core.errors import MoltisError


class ModelStoreError(MoltisError):
    """A model could not be found, downloaded or checked; the message says what to do."""


class ModelMissingError(ModelStoreError):
    """A model is not installed (and may not be downloaded here)."""


class ChecksumError(ModelStoreError):
    """A file's SHA-256 is not the expected one (the bad file has been deleted)."""
