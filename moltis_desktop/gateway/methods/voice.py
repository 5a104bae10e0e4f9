"""tts.*, talk.mode, talk.speak and moltis.voice.*: speech on this machine over the protocol.

OpenClaw's shapes: `tts.status` / `tts.providers` / `tts.enable` / `tts.disable` /
`tts.setProvider` / `tts.convert` (`{audioBase64, mimeType, provider, outputFormat}`), and
`talk.mode` (`{enabled, phase?}`, broadcast as the `talk.mode` event). Ours besides:
`moltis.tts.setAuto` (typed chat's replies spoken too, `tts.status.auto`),
`moltis.voice.status`, `moltis.voice.listen` (wake-word listening on or off),
`moltis.voice.pushToTalk`, `moltis.voice.transcribe` (the web app's mic: the browser
records, the gateway transcribes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from moltis_desktop.gateway.registry import EmptyParams, MethodTable
from moltis_desktop.protocol.constants import ErrorCode, Scope
from moltis_desktop.protocol.frames import GatewayError
from moltis_desktop.voice.errors import VoiceError

if TYPE_CHECKING:
    from moltis_desktop.gateway.context import MethodContext
    from moltis_desktop.gateway.state import GatewayState

TABLE = MethodTable(events=("talk.mode", "moltis.tts.changed", "moltis.voice.state"))
_LOGGER = logging.getLogger(__name__)

MAX_TTS_CHARS = 4000
MAX_AUDIO_BYTES = 25 * 1024 * 1024


def _voice_error(exc: Exception) -> GatewayError:
    return GatewayError(ErrorCode.UNAVAILABLE, str(exc))


async def _persist(gateway: GatewayState, patch: dict[str, Any]) -> None:
    """Write a change to the config file (atomically, like config.patch)."""
    async with gateway.config_lock:
        await asyncio.to_thread(gateway.config.patch, {"voice": patch})


def _tts_status(gateway: GatewayState) -> dict[str, Any]:
    tts = gateway.settings.voice.tts
    service = gateway.voice
    states = []
    if service is not None:
        states = [
            {"id": p.id, "label": p.label, "configured": p.configured()}
            for p in service.providers()
        ]
    fallback = [s["id"] for s in states if s["id"] != tts.provider and s["configured"]]
    return {
        "enabled": tts.enabled,
        "auto": "always" if tts.speak_chat_replies else "off",
        "provider": tts.provider,
        "voice": tts.voice if tts.provider == "piper" else tts.openai_voice,
        "speed": tts.speed,
        "fallbackProvider": fallback[0] if fallback else None,
        "fallbackProviders": fallback,
        "providerStates": states,
        "prefsPath": str(gateway.config.path),
        "hasOpenAIKey": any(s["id"] == "openai" and s["configured"] for s in states),
        "available": service is not None,
    }


@TABLE.method("tts.status", scope=Scope.READ, params=EmptyParams)
async def tts_status(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Whether replies are spoken, by which provider and voice."""
    return await asyncio.to_thread(_tts_status, ctx.state)


@TABLE.method("tts.providers", scope=Scope.READ, params=EmptyParams)
async def tts_providers(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """The speech providers, their voices and models."""
    service = ctx.voice

    def collect() -> list[dict[str, Any]]:
        return [
            {
                "id": p.id,
                "name": p.label,
                "configured": p.configured(),
                "models": p.models(),
                "voices": p.voices(),
            }
            for p in service.providers()
        ]

    providers = await asyncio.to_thread(collect)
    return {"providers": providers, "active": ctx.settings.voice.tts.provider}


async def _set_enabled(ctx: MethodContext, enabled: bool) -> dict[str, Any]:
    await _persist(ctx.state, {"tts": {"enabled": enabled}})
    ctx.events.broadcast("moltis.tts.changed", _tts_status(ctx.state))
    return {"enabled": enabled}


@TABLE.method("tts.enable", scope=Scope.WRITE, params=EmptyParams)
async def tts_enable(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Speak replies to spoken questions (saved in the config)."""
    return await _set_enabled(ctx, True)


@TABLE.method("tts.disable", scope=Scope.WRITE, params=EmptyParams)
async def tts_disable(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Stop speaking replies (saved in the config)."""
    return await _set_enabled(ctx, False)


class SetAutoParams(msgspec.Struct, forbid_unknown_fields=True):
    auto: Literal["off", "always"]


@TABLE.method("moltis.tts.setAuto", scope=Scope.WRITE, params=SetAutoParams)
async def tts_set_auto(ctx: MethodContext, params: SetAutoParams) -> dict[str, Any]:
    """Speak the replies to typed chat too (`always`) or not (`off`), on this machine's
    speakers (saved as voice.tts.speak_chat_replies); `off` stops one being spoken."""
    on = params.auto == "always"
    if not on and ctx.state.voice is not None:
        ctx.state.voice.hush()
    await _persist(ctx.state, {"tts": {"speak_chat_replies": on}})
    ctx.events.broadcast("moltis.tts.changed", _tts_status(ctx.state))
    return {"auto": params.auto}


class SetProviderParams(msgspec.Struct, forbid_unknown_fields=True):
    provider: str


@TABLE.method("tts.setProvider", scope=Scope.WRITE, params=SetProviderParams)
async def tts_set_provider(ctx: MethodContext, params: SetProviderParams) -> dict[str, Any]:
    """Choose the speech provider: `piper` (this machine) or `openai` (saved)."""
    from moltis_desktop.voice.service import TTS_PROVIDERS

    provider = params.provider.strip()
    if provider not in TTS_PROVIDERS:
        raise GatewayError.invalid(
            f"Invalid provider. Use a registered TTS provider id: {', '.join(TTS_PROVIDERS)}"
        )
    await _persist(ctx.state, {"tts": {"provider": provider}})
    ctx.events.broadcast("moltis.tts.changed", _tts_status(ctx.state))
    return {"provider": provider}


class ConvertParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    text: str
    channel: str | None = None
    provider: str | None = None
    voice: str | None = None
    speed: Annotated[float, msgspec.Meta(gt=0.2, le=4.0)] | None = None


@TABLE.method("tts.convert", scope=Scope.WRITE, params=ConvertParams)
async def tts_convert(ctx: MethodContext, params: ConvertParams) -> dict[str, Any]:
    """Text to speech: a WAV file, base64."""
    return await _speak(ctx, params.text, params.provider, params.voice, params.speed)


class TalkSpeakParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """OpenClaw's `talk.speak` (the ElevenLabs-style knobs are accepted; piper has none)."""

    text: str
    voice_id: str | None = None
    model_id: str | None = None
    output_format: str | None = None
    speed: Annotated[float, msgspec.Meta(gt=0.2, le=4.0)] | None = None
    rate_wpm: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stability: float | None = None
    similarity: float | None = None
    style: float | None = None
    speaker_boost: bool | None = None
    seed: int | None = None
    normalize: str | None = None
    language: str | None = None
    latency_tier: int | None = None


@TABLE.method("talk.speak", scope=Scope.TALK, params=TalkSpeakParams)
async def talk_speak(ctx: MethodContext, params: TalkSpeakParams) -> dict[str, Any]:
    """Talk mode's speech for a node (a phone in voice-node mode): the reply as WAV."""
    speed = params.speed or (params.rate_wpm / 175.0 if params.rate_wpm else None)
    result = await _speak(ctx, params.text, None, params.voice_id, speed)
    return {
        k: result[k]
        for k in (
            "audioBase64",
            "provider",
            "outputFormat",
            "voiceCompatible",
            "mimeType",
            "fileExtension",
        )
    }


async def _speak(
    ctx: MethodContext,
    raw_text: str,
    provider: str | None,
    voice: str | None,
    speed: float | None,
) -> dict[str, Any]:
    from moltis_desktop.voice.audio import wav_bytes

    text = raw_text.strip()
    if not text:
        raise GatewayError.invalid("tts.convert requires text")
    if len(text) > MAX_TTS_CHARS:
        raise GatewayError.invalid(
            f"tts.convert takes at most {MAX_TTS_CHARS} characters; this is {len(text)}"
        )
    service = ctx.voice
    try:
        speech = await service.synthesize(
            text, provider=provider, voice=voice or "", speed=speed or 0.0
        )
    except VoiceError as exc:
        raise _voice_error(exc) from None
    audio = wav_bytes(speech.pcm, speech.rate)
    return {
        "audioBase64": base64.b64encode(audio).decode("ascii"),
        "mimeType": "audio/wav",
        "fileExtension": ".wav",
        "provider": speech.provider,
        "outputFormat": f"wav_{speech.rate}",
        "voiceCompatible": False,
        "durationMs": round(speech.duration_s * 1000),
    }


class TalkModeParams(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool
    phase: str | None = None


@TABLE.method("talk.mode", scope=Scope.TALK, params=TalkModeParams)
async def talk_mode(ctx: MethodContext, params: TalkModeParams) -> dict[str, Any]:
    """Talk mode on or off. When this machine is listening, its loop follows; every client
    hears `talk.mode`."""
    service = ctx.state.voice
    if service is not None and service.listening:
        try:
            service.set_talk_mode(params.enabled)
        except VoiceError as exc:
            raise _voice_error(exc) from None
        return {"enabled": params.enabled, "phase": params.phase, "ts": ctx.clock.now_ms()}
    payload = {"enabled": params.enabled, "phase": params.phase, "ts": ctx.clock.now_ms()}
    ctx.events.broadcast("talk.mode", payload, droppable=True)
    return payload


@TABLE.method("moltis.voice.status", scope=Scope.READ, params=EmptyParams)
def voice_status(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Whether this machine listens, and what the loop is doing."""
    service = ctx.state.voice
    settings = ctx.settings.voice
    base = service.status() if service is not None else {"listening": False, "state": "off"}
    return {
        **base,
        "available": service is not None,
        "wakeModels": list(settings.wake.models),
        "sttModel": settings.stt.model,
        "ttsProvider": settings.tts.provider,
    }


class ListenParams(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool


@TABLE.method("moltis.voice.listen", scope=Scope.ADMIN, params=ListenParams)
async def voice_listen(ctx: MethodContext, params: ListenParams) -> dict[str, Any]:
    """Turn wake-word listening on this machine on or off (saved as voice.enabled)."""
    service = ctx.voice
    try:
        if params.enabled:
            await service.start()
        else:
            await service.stop()
    except VoiceError as exc:
        raise _voice_error(exc) from None
    await _persist(ctx.state, {"enabled": params.enabled})
    return service.status()


@TABLE.method("moltis.voice.pushToTalk", scope=Scope.WRITE, params=EmptyParams)
def voice_push_to_talk(ctx: MethodContext, params: EmptyParams) -> dict[str, Any]:
    """Start a question now, without the wake word."""
    try:
        ctx.voice.push_to_talk()
    except VoiceError as exc:
        raise _voice_error(exc) from None
    return {"ok": True}


class TranscribeParams(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    audio_base64: str
    mime_type: str = "audio/wav"
    language: str | None = None


@TABLE.method("moltis.voice.transcribe", scope=Scope.WRITE, params=TranscribeParams)
async def voice_transcribe(ctx: MethodContext, params: TranscribeParams) -> dict[str, Any]:
    """Audio (WAV, WebM/Opus, Ogg, MP3, M4A; base64) to text, on this machine."""
    try:
        data = base64.b64decode(params.audio_base64.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError.invalid("audioBase64 is not valid base64") from None
    if len(data) > MAX_AUDIO_BYTES:
        raise GatewayError.invalid(
            f"the audio is {len(data) // 1024 // 1024} MiB; at most "
            f"{MAX_AUDIO_BYTES // 1024 // 1024} MiB"
        )
    if not data:
        raise GatewayError.invalid("the audio is empty")
    service = ctx.voice
    try:
        result = await service.transcribe_audio(data, language=params.language)
    except VoiceError as exc:
        raise _voice_error(exc) from None
    return {
        "text": result.text,
        "language": result.language,
        "durationMs": round(result.duration_s * 1000),
        "elapsedMs": round(result.elapsed_s * 1000),
    }
