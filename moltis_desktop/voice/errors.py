"""The voice errors a user can act on."""

from __future__ import annotations

from moltis_desktop.core.errors import MoltisError
from moltis_desktop.modelstore import errors as store


class VoiceError(MoltisError):
    """Something in the voice pipeline failed; the message says what to do."""


class AudioDeviceError(VoiceError):
    """No microphone or speaker, or no permission to use it."""


class VoiceModelError(VoiceError, store.ModelStoreError):
    """A voice model could not be found, downloaded or checked."""


class ModelMissingError(VoiceModelError, store.ModelMissingError):
    """A voice model is not installed (and may not be downloaded here)."""


class ModelChecksumError(VoiceModelError, store.ChecksumError):
    """A voice model's file does not have the expected SHA-256 (it was deleted)."""
