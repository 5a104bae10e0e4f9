"""The voice errors a user can act on."""

from __future__ import annotations

from moltis_desktop.core.errors import MoltisError


class VoiceError(MoltisError):
    """Something in the voice pipeline failed; the message says what to do."""


class AudioDeviceError(VoiceError):
    """No microphone or speaker, or no permission to use it."""


class ModelMissingError(VoiceError):
    """A voice model is not installed (and may not be downloaded here)."""
