"""Talk-mode voice directives, and turning a Markdown reply into text worth speaking.

As OpenClaw's talk mode has it: a reply may start with one JSON line that sets the voice,
`{"voice": "<id>", "once": true}`. Only the first non-empty line counts, unknown keys are
ignored, `once` applies it to this reply only (otherwise it becomes talk mode's new
default), and the line is never spoken.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_WPM_NORMAL = 175.0
"""Words per minute that count as speed 1.0 (`rate` in a directive)."""


@dataclass(frozen=True)
class VoiceDirective:
    """What a reply's first line asked for."""

    voice: str | None = None
    model: str | None = None
    speed: float | None = None
    lang: str | None = None
    once: bool = False


def _first(data: dict[str, object], *keys: str) -> object:
    for key in keys:
        if key in data and data[key] not in (None, ""):
            return data[key]
    return None


def split_directive(reply: str) -> tuple[VoiceDirective | None, str]:
    """(the directive, the reply without it); (None, reply) when there is none."""
    lines = reply.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        head = line.strip()
        if not (head.startswith("{") and head.endswith("}")):
            return None, reply
        try:
            data = json.loads(head)
        except ValueError:
            return None, reply
        if not isinstance(data, dict):
            return None, reply
        voice = _first(data, "voice", "voice_id", "voiceId")
        model = _first(data, "model", "model_id", "modelId")
        speed = _first(data, "speed")
        rate = _first(data, "rate")
        value: float | None = None
        if isinstance(speed, int | float) and speed > 0:
            value = float(speed)
        elif isinstance(rate, int | float) and rate > 0:
            value = float(rate) / _WPM_NORMAL
        lang = _first(data, "lang")
        directive = VoiceDirective(
            voice=str(voice) if voice is not None else None,
            model=str(model) if model is not None else None,
            speed=value,
            lang=str(lang) if lang is not None else None,
            once=data.get("once") is True,
        )
        return directive, "\n".join(lines[i + 1 :]).lstrip("\n")
    return None, reply


_CODE_BLOCK = re.compile(r"```.*?```", re.S)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_MARKS = re.compile(r"(\*\*|__|\*|_|~~|^#{1,6}\s*|^>\s?|^\s*[-*+]\s+)", re.M)


def speakable(text: str, max_chars: int = 1500) -> str:
    """A Markdown reply as plain sentences: code blocks are summarised, links read by their
    text, emphasis marks dropped, and long replies cut at a sentence end."""
    text = _CODE_BLOCK.sub(" (code shown on screen) ", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("a link", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _MARKS.sub("", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{2,}", "\n", text).strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind("\n"))
        text = (cut[: end + 1] if end > max_chars // 2 else cut).rstrip() + " …"
    return text
