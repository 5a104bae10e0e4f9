"""The voice service: the models, the engines and the listening loop, as one object the
runtime builds and the gateway, the tray and the CLI use.

It knows nothing of the gateway: the runtime hands it `ask` (a transcript in, the
assistant's reply out) and observers for its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.config.settings import VoiceSettings
from moltis_desktop.voice.errors import VoiceError

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import AudioSink, AudioSource
    from moltis_desktop.voice.models import ModelManager
    from moltis_desktop.voice.pipeline import Ask, EventCallback, VoicePipeline
    from moltis_desktop.voice.stt import Transcriber, Transcript
    from moltis_desktop.voice.tts import Speech, SpeechProvider

_LOGGER = logging.getLogger(__name__)

TTS_PROVIDERS = ("piper", "openai")


class VoiceService:
    """Speech in and out on this machine."""

    def __init__(
        self,
        models: ModelManager,
        *,
        settings: Callable[[], VoiceSettings] = VoiceSettings,
        openai_credentials: Callable[[], tuple[str | None, str]] | None = None,
        recordings_dir: Path | None = None,
        ask: Ask | None = None,
    ) -> None:
        self.models = models
        self.settings = settings
        self.openai_credentials = openai_credentials or (lambda: (None, ""))
        self.recordings_dir = recordings_dir
        self.observers: list[EventCallback] = []
        """Called with every pipeline event (kind, data); must not block."""
        self.ask = ask
        """Sends a transcript to the assistant and returns the reply (the runtime's)."""
        self.pipeline: VoicePipeline | None = None
        self.say_sink: AudioSink | None = None
        """Where `say` plays (None: the speakers, `voice.output_device`)."""
        self._task: asyncio.Task[None] | None = None
        self._saying: asyncio.Task[bool] | None = None
        self._say_sink: AudioSink | None = None
        self._transcribers: dict[tuple[str, str, str, int], Transcriber] = {}
        self._piper: Any = None
        self.last_error = ""

    # ------------------------------------------------------------------ engines

    def stt_model_path(self) -> Path:
        from moltis_desktop.voice.catalog import whisper_id

        model = self.settings().stt.model
        path = Path(model).expanduser()
        if path.is_dir():
            return path
        return self.models.require(whisper_id(model))

    def transcriber(self) -> Transcriber:
        """The transcriber for the current settings (one per model and options)."""
        from moltis_desktop.voice.stt import Transcriber

        stt = self.settings().stt
        path = self.stt_model_path()
        key = (str(path), stt.compute_type, stt.language, stt.beam_size)
        if key not in self._transcribers:
            self._transcribers[key] = Transcriber(
                path,
                compute_type=stt.compute_type,
                language=stt.language,
                beam_size=stt.beam_size,
                threads=stt.threads,
            )
        return self._transcribers[key]

    async def transcribe_audio(self, data: bytes, *, language: str | None = None) -> Transcript:
        """A voice note (any format PyAV reads) as text."""
        transcriber = self.transcriber()
        return await asyncio.to_thread(transcriber.transcribe_file, data, language=language)

    def _piper_voice_path(self, voice: str) -> Path:
        from moltis_desktop.voice.catalog import piper_id

        path = Path(voice).expanduser()
        if path.suffix == ".onnx":
            if not path.is_file():
                raise VoiceError(f"the piper voice {path} does not exist; set voice.tts.voice")
            return path
        return self.models.require(piper_id(voice))

    def speech_provider(self, provider_id: str | None = None) -> SpeechProvider:
        """The speech provider in use (or the one asked for)."""
        from moltis_desktop.voice.tts import OpenAiTts, PiperTts

        tts = self.settings().tts
        chosen = provider_id or tts.provider
        if chosen == "openai":
            return OpenAiTts(
                self.openai_credentials, model=tts.openai_model, voice=tts.openai_voice
            )
        if chosen != "piper":
            raise VoiceError(f"unknown speech provider {chosen!r}: use piper or openai")
        if self._piper is None or self._piper.default_voice != tts.voice:
            self._piper = PiperTts(self._piper_voice_path, tts.voice)
        return self._piper  # type: ignore[no-any-return]

    def providers(self) -> list[SpeechProvider]:
        return [self.speech_provider(p) for p in TTS_PROVIDERS]

    async def synthesize(
        self, text: str, *, provider: str | None = None, voice: str = "", speed: float = 0.0
    ) -> Speech:
        """Speech for `text` (voice and speed default to the settings)."""
        from moltis_desktop.voice.directive import speakable
        from moltis_desktop.voice.tts import VoiceOptions, synthesize

        tts = self.settings().tts
        spoken = speakable(text, tts.max_chars)
        options = VoiceOptions(voice=voice, speed=speed or tts.speed)
        return await synthesize(self.speech_provider(provider), spoken, options)

    def missing_models(self) -> list[str]:
        """The models the current settings need that are neither downloaded nor shipped
        by a package (model files given as paths are not managed)."""
        from moltis_desktop.voice.catalog import piper_id, whisper_id

        settings = self.settings()
        needed = []
        if not Path(settings.stt.model).expanduser().is_dir():
            needed.append(whisper_id(settings.stt.model))
        if settings.tts.provider == "piper" and not settings.tts.voice.endswith(".onnx"):
            needed.append(piper_id(settings.tts.voice))
        return [m for m in needed if self.models.path(m) is None]

    async def ensure_models(self) -> None:
        """Download what is missing (first use), reporting progress as `download` events."""
        for model_id in self.missing_models():
            _LOGGER.info("downloading the voice model %s (first use)", model_id)
            last = [0.0]

            def progress(
                done: int, total: int, model_id: str = model_id, last: list[float] = last
            ) -> None:
                share = done / total if total else 0.0
                if share - last[0] >= 0.02 or done == total:
                    last[0] = share
                    self._emit("download", {"id": model_id, "done": done, "total": total})

            self._emit("download", {"id": model_id, "done": 0, "total": 0})
            await self.models.download(model_id, progress)

    # ------------------------------------------------------------------ replies to chat

    def say_reply(self, reply: Callable[[], Awaitable[str]]) -> asyncio.Task[bool]:
        """Speak a typed chat message's reply (`voice.tts.speak_chat_replies`) once `reply`
        gives it, in a task of its own; what was being said this way stops. A question to
        the voice loop, or its reply, stops it too, and so does `hush` or `stop`."""
        self.hush()
        task = asyncio.get_running_loop().create_task(self._say_when_ready(reply))
        self._saying = task
        task.add_done_callback(self._said)
        return task

    async def _say_when_ready(self, reply: Callable[[], Awaitable[str]]) -> bool:
        return await self.say(await reply())

    def _said(self, task: asyncio.Task[bool]) -> None:
        if self._saying is task:
            self._saying = None
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, VoiceError):
            _LOGGER.warning("a chat reply was not spoken: %s", exc)
        elif exc is not None:
            _LOGGER.error("a chat reply was not spoken", exc_info=exc)

    async def say(self, text: str) -> bool:
        """Speak `text` (a reply: a voice directive is dropped, a long one cut to
        `tts.max_chars`) with the configured voice; True when said to the end, False when
        `hush` stopped it. Synthesis runs in a worker thread, playback on the audio
        device's own."""
        from moltis_desktop.voice.audio import Speaker
        from moltis_desktop.voice.directive import speakable, split_directive
        from moltis_desktop.voice.tts import VoiceOptions

        settings = self.settings()
        spoken = speakable(split_directive(text)[1], settings.tts.max_chars)
        if not spoken.strip():
            return True
        sink = self.say_sink or Speaker(settings.output_device)
        self._say_sink = sink
        try:
            provider = self.speech_provider()
            async for pcm, rate in provider.stream(spoken, VoiceOptions(speed=settings.tts.speed)):
                if self._say_sink is not sink or not await sink.play(pcm, rate):
                    return False
            return True
        finally:
            if self._say_sink is sink:
                self._say_sink = None

    @property
    def saying(self) -> bool:
        """A chat reply is being spoken."""
        return self._saying is not None and not self._saying.done()

    def hush(self) -> None:
        """Stop speaking a chat reply (now: the audio stops within a block)."""
        sink, self._say_sink = self._say_sink, None
        task = self._saying
        if sink is not None:
            sink.stop()  # `say` returns at its next step
        elif task is not None and not task.done():
            task.cancel()  # still waiting for the reply

    # ------------------------------------------------------------------ the loop

    @property
    def listening(self) -> bool:
        return self._task is not None and not self._task.done()

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "error":
            self.last_error = str(data.get("message", ""))
        elif kind == "state" and data.get("state") in ("capturing", "speaking"):
            self.hush()  # a question started, or its reply: a chat reply stops for it
        for observer in list(self.observers):
            try:
                observer(kind, data)
            except Exception:
                _LOGGER.exception("voice observer failed on %s", kind)

    def build_pipeline(
        self,
        source: AudioSource,
        sink: AudioSink,
        *,
        wake: bool = True,
        chime_sink: AudioSink | None = None,
    ) -> VoicePipeline:
        """A pipeline on the given audio (the microphone, or a file for `voice listen`)."""
        from moltis_desktop.voice.pipeline import VoicePipeline
        from moltis_desktop.voice.vad import Vad
        from moltis_desktop.voice.wakeword import WakeWordDetector

        settings = self.settings()
        if self.ask is None:
            raise VoiceError("the assistant is not running; voice has nobody to talk to")
        detector = None
        if wake:
            detector = WakeWordDetector(
                settings.wake.models,
                threshold=settings.wake.threshold,
                patience=settings.wake.patience,
                refractory_s=settings.wake.refractory_s,
                vad=Vad() if settings.wake.vad_gate else None,
            )
        return VoicePipeline(
            source=source,
            sink=sink,
            detector=detector,
            vad=Vad(),
            transcriber=self.transcriber(),
            tts=self.speech_provider,
            ask=self.ask,
            settings=self.settings,
            on_event=self._emit,
            recordings_dir=self.recordings_dir,
            chime_sink=chime_sink,
        )

    async def start(self, source: AudioSource | None = None, sink: AudioSink | None = None) -> None:
        """Start listening (on the microphone and speakers unless given others)."""
        from moltis_desktop.voice.audio import Microphone, Speaker

        if self.listening:
            return
        settings = self.settings()
        if source is None:
            # Say now, to whoever turned voice on, when there is no microphone or speaker.
            from moltis_desktop.voice.audio import resolve_device

            await asyncio.to_thread(resolve_device, settings.input_device, "input")
            if sink is None:
                await asyncio.to_thread(resolve_device, settings.output_device, "output")
        chimes = None if sink is not None else Speaker(settings.output_device)
        source = source or Microphone(settings.input_device)
        sink = sink or Speaker(settings.output_device)
        await self.ensure_models()
        # Load the models now, in a thread: the first question should not wait for them.
        # Chimes get a speaker of their own: a send chime must not share the reply's stop.
        pipeline = await asyncio.to_thread(self.build_pipeline, source, sink, chime_sink=chimes)
        await asyncio.to_thread(pipeline.transcriber.load)
        self.pipeline = pipeline
        self.last_error = ""
        # The pipeline reports its own failures as `error` events (see VoicePipeline.run).
        self._task = asyncio.get_running_loop().create_task(pipeline.run())

    async def stop(self) -> None:
        """Stop listening (and speaking)."""
        self.hush()
        task, self._task = self._task, None
        if self.pipeline is not None:
            self.pipeline.sink.stop()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def push_to_talk(self) -> None:
        if self.pipeline is None or not self.listening:
            raise VoiceError("voice is off: turn it on first (tray → Voice → Listen)")
        self.pipeline.push_to_talk()

    def set_talk_mode(self, enabled: bool) -> None:
        if self.pipeline is None or not self.listening:
            raise VoiceError("voice is off: turn it on first (tray → Voice → Listen)")
        self.pipeline.set_talk_mode(enabled)

    def status(self) -> dict[str, Any]:
        pipeline = self.pipeline
        return {
            "listening": self.listening,
            "state": pipeline.state if pipeline and self.listening else "off",
            "talkMode": bool(pipeline and pipeline.talk_mode and self.listening),
            "error": self.last_error or None,
        }
