"""Attachments of a message, as the wire carries them (`{mimeType, content, fileName}`,
base64), made into what a turn can use: images go to the model as images, text files as
fenced text after the message, voice notes as their transcript. Anything else is refused
with a message saying so.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moltis_desktop.core.errors import MoltisError

_LOGGER = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 6 * 1024 * 1024
MAX_TEXT_ATTACHMENT_BYTES = 512 * 1024
MAX_AUDIO_ATTACHMENT_BYTES = 25 * 1024 * 1024
_TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/toml")

Transcribe = Callable[[bytes, str], Awaitable[str]]
"""Turns a voice note (audio bytes, MIME type) into text."""


class MediaError(MoltisError):
    """An attachment cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Attachment:
    """One attachment of a message."""

    mime_type: str
    data: str
    """Base64 (a `data:…;base64,` prefix is allowed)."""
    name: str = ""
    """The file's name, when the client gave one."""

    @property
    def b64(self) -> str:
        """The data without a `data:…;base64,` prefix."""
        return self.data.split(",", 1)[1] if self.data.startswith("data:") else self.data

    def decoded(self, what: str) -> bytes:
        """The bytes; `what` names the attachment in the error when they are not base64."""
        try:
            return base64.b64decode(self.b64, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Image:
    """An image for the model: its MIME type and base64 data."""

    mime_type: str
    data: str


@dataclass(frozen=True)
class Prepared:
    """A message's text with its attachments worked in, and its images."""

    text: str
    images: tuple[Image, ...]


def attachments_from(raw: Sequence[Mapping[str, Any]] | None) -> list[Attachment]:
    """The wire's attachments (`{type|mimeType, content|data, fileName|name}`) that carry
    data; items without a MIME type or content are skipped."""
    out = []
    for item in raw or ():
        mime = str(item.get("mimeType") or item.get("type") or "")
        content = item.get("content") or item.get("data")
        name = str(item.get("fileName") or item.get("name") or "")
        if isinstance(content, str) and "/" in mime:
            out.append(Attachment(mime, content, name))
    return out


async def prepare(
    text: str, attachments: Sequence[Attachment], transcribe: Transcribe | None
) -> Prepared:
    """`text` with the attachments worked in: images checked and kept, voice notes
    transcribed into the text, text files appended. Raises `MediaError`."""
    images = tuple(_image(a) for a in attachments if a.mime_type.startswith("image/"))
    for attachment in attachments:
        if attachment.mime_type.startswith("audio/"):
            text = await _with_transcript(text, attachment, transcribe)
    text += "".join(
        _text_file(a) for a in attachments if not a.mime_type.startswith(("image/", "audio/"))
    )
    return Prepared(text, images)


def _image(attachment: Attachment) -> Image:
    size = len(attachment.decoded("an image attachment"))
    if size > MAX_IMAGE_BYTES:
        raise MediaError(
            f"an image attachment is {size // 1024} KiB; the limit is "
            f"{MAX_IMAGE_BYTES // 1024 // 1024} MiB"
        )
    return Image(attachment.mime_type, attachment.b64)


async def _with_transcript(text: str, attachment: Attachment, transcribe: Transcribe | None) -> str:
    """A voice note transcribed into the turn, as OpenClaw's audio understanding does: the
    transcript alone when there is no text, else after it."""
    name = attachment.name or "voice note"
    if transcribe is None:
        raise MediaError(
            f"{name} is audio, and voice transcription is not available here (install "
            "moltis-desktop[voice])"
        )
    raw = attachment.decoded(f"the attachment {name}")
    if len(raw) > MAX_AUDIO_ATTACHMENT_BYTES:
        raise MediaError(
            f"{name} is {len(raw) // 1024 // 1024} MiB; voice notes are limited to "
            f"{MAX_AUDIO_ATTACHMENT_BYTES // 1024 // 1024} MiB"
        )
    try:
        transcript = (await transcribe(raw, attachment.mime_type)).strip()
    except MoltisError as exc:
        raise MediaError(f"{name} could not be transcribed: {exc}") from None
    _LOGGER.info("transcribed %s (%d bytes) to %d characters", name, len(raw), len(transcript))
    if not text.strip():
        return transcript
    return f"{text}\n\n[Audio] {name}\nTranscript: {transcript}"


def _text_file(attachment: Attachment) -> str:
    """A text attachment as a fenced block appended to the message."""
    mime = attachment.mime_type.split(";")[0].strip().lower()
    name = attachment.name or "attachment"
    if not (mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+json")):
        raise MediaError(f"{name} is {mime}; only images and text files can be attached for now")
    raw = attachment.decoded(f"the attachment {name}")
    if len(raw) > MAX_TEXT_ATTACHMENT_BYTES:
        raise MediaError(
            f"{name} is {len(raw) // 1024} KiB; text attachments are limited to "
            f"{MAX_TEXT_ATTACHMENT_BYTES // 1024} KiB"
        )
    decoded = raw.decode("utf-8", errors="replace")
    fence = "````" if "```" in decoded else "```"
    return f"\n\n{name}:\n{fence}\n{decoded.rstrip()}\n{fence}"
