"""Speech: piper on this machine, or OpenAI's speech API as the cloud alternative.

Both stream: piper speaks sentence by sentence (the first sentence plays while the rest is
synthesised), OpenAI sends raw PCM as it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from moltis_desktop.voice.errors import ModelMissingError, VoiceError

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import Pcm

_LOGGER = logging.getLogger(__name__)

OPENAI_TTS_MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd")
OPENAI_TTS_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
_OPENAI_PCM_RATE = 24000


@dataclass(frozen=True)
class Speech:
    """Synthesised speech."""

    pcm: Pcm
    rate: int
    provider: str
    elapsed_s: float
    """Time taken to synthesise all of it, in seconds."""
    first_audio_s: float
    """Time to the first audio, in seconds."""

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.rate


@dataclass(frozen=True)
class VoiceOptions:
    """One utterance's voice: who speaks and how fast (talk-mode directives set these)."""

    voice: str = ""
    """Voice id or model path; empty means the provider's configured one."""
    speed: float = 1.0
    """Rate: 1.0 is the voice's own pace."""


class SpeechProvider(Protocol):
    """A text-to-speech engine."""

    id: str
    label: str

    def configured(self) -> bool: ...

    def voices(self) -> list[str]: ...

    def models(self) -> list[str]: ...

    def stream(self, text: str, options: VoiceOptions) -> AsyncIterator[tuple[Pcm, int]]: ...


async def synthesize(provider: SpeechProvider, text: str, options: VoiceOptions) -> Speech:
    """All of `text` as one piece of audio."""
    import numpy as np

    started = time.perf_counter()
    first = 0.0
    parts: list[Pcm] = []
    rate = 0
    async for pcm, pcm_rate in provider.stream(text, options):
        if not parts:
            first = time.perf_counter() - started
        parts.append(pcm)
        rate = pcm_rate
    if not parts:
        raise VoiceError("there is nothing to say (the text has no words)")
    return Speech(np.concatenate(parts), rate, provider.id, time.perf_counter() - started, first)


class PiperTts:
    """Piper voices (ONNX) on this machine. `resolve` maps a voice id to its `.onnx` file."""

    id = "piper"
    label = "Piper (on this machine)"

    def __init__(self, resolve: Callable[[str], Path], default_voice: str) -> None:
        self.resolve = resolve
        self.default_voice = default_voice
        self._voices: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def configured(self) -> bool:
        try:
            self.resolve(self.default_voice)
        except VoiceError:
            return False
        return True

    def voices(self) -> list[str]:
        return [self.default_voice]

    def models(self) -> list[str]:
        return []

    def load(self, voice: str = "") -> Any:
        """The piper voice, loaded once (blocking)."""
        path = self.resolve(voice or self.default_voice)
        with self._lock:
            if path not in self._voices:
                try:
                    from piper import PiperVoice
                except ImportError:
                    raise ModelMissingError(
                        "speech needs piper-tts: pip install 'moltis-desktop[voice]'"
                    ) from None
                started = time.perf_counter()
                self._voices[path] = PiperVoice.load(path)
                _LOGGER.info(
                    "piper voice %s loaded in %.2f s", path.stem, time.perf_counter() - started
                )
            return self._voices[path]

    async def stream(self, text: str, options: VoiceOptions) -> AsyncIterator[tuple[Pcm, int]]:
        """Sentence by sentence, synthesised in a worker thread."""
        from piper import SynthesisConfig

        voice = await asyncio.to_thread(self.load, options.voice)
        config = SynthesisConfig(length_scale=1.0 / max(0.25, min(4.0, options.speed)))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        end = object()

        def work() -> None:
            try:
                for chunk in voice.synthesize(text, syn_config=config):
                    if cancel.is_set():
                        break
                    loop.call_soon_threadsafe(
                        queue.put_nowait, (chunk.audio_int16_array, chunk.sample_rate)
                    )
            except Exception as exc:  # handed to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, end)

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is end:
                    break
                if isinstance(item, Exception):
                    raise VoiceError(f"piper could not speak: {item}") from item
                yield item
        finally:
            cancel.set()
            with contextlib.suppress(Exception):
                await worker


class OpenAiTts:
    """OpenAI's speech API (`/v1/audio/speech`), raw 24 kHz PCM streamed. `credentials`
    gives (api key, base URL) from the `openai` provider's config and secret."""

    id = "openai"
    label = "OpenAI (cloud)"

    def __init__(
        self,
        credentials: Callable[[], tuple[str | None, str]],
        *,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
    ) -> None:
        self.credentials = credentials
        self.model = model
        self.voice = voice

    def configured(self) -> bool:
        try:
            key, _ = self.credentials()
        except Exception:
            return False
        return bool(key)

    def voices(self) -> list[str]:
        return list(OPENAI_TTS_VOICES)

    def models(self) -> list[str]:
        return list(OPENAI_TTS_MODELS)

    async def stream(self, text: str, options: VoiceOptions) -> AsyncIterator[tuple[Pcm, int]]:
        import numpy as np
        import openai

        key, base_url = self.credentials()
        if not key:
            raise VoiceError(
                "OpenAI speech needs the openai provider's API key: `moltis secrets set "
                "openai-api-key` (or OPENAI_API_KEY), or use voice.tts.provider = piper"
            )
        client = openai.AsyncOpenAI(api_key=key, base_url=base_url or None, max_retries=1)
        pending = b""
        try:
            async with client.audio.speech.with_streaming_response.create(
                model=self.model,
                voice=options.voice or self.voice,
                input=text,
                response_format="pcm",
                speed=max(0.25, min(4.0, options.speed)),
            ) as response:
                async for data in response.iter_bytes(9600):
                    pending += data
                    usable = len(pending) // 2 * 2
                    if usable:
                        yield np.frombuffer(pending[:usable], np.int16).copy(), _OPENAI_PCM_RATE
                        pending = pending[usable:]
        except openai.APIConnectionError as exc:
            raise VoiceError(
                f"cannot reach OpenAI's speech API ({exc}); check the network or use "
                "voice.tts.provider = piper"
            ) from None
        except openai.APIStatusError as exc:
            raise VoiceError(
                f"OpenAI's speech API refused ({exc.status_code}): {exc.message}"
            ) from None
        finally:
            await client.close()
