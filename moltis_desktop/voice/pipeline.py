"""The voice loop: wake word → question → transcript → assistant → spoken reply, with
push-to-talk, talk mode (listen, send, speak, again) and barge-in.

One task reads the microphone and decides what each 80 ms chunk is for (the wake word, a
question, or a possible barge-in while a reply plays); the work on a question runs in a task
of its own so that the microphone keeps being read. All model work runs in worker threads.

Privacy: before the wake word, audio lives only in a 2 s buffer (the detector's own window)
and is never written or sent. A question is transcribed from the start of the wake phrase
(those 2 s, then what follows) and the wake phrase is taken out of the text: a question said
in one breath with the wake phrase is heard whole, wherever the detector happened to fire
(a cut inside the phrase glued its tail to the question and Whisper garbled both; see
`strip_wake_phrase` and docs/BENCHMARKS.md). Only that audio is transcribed, and kept only
with `voice.keep_audio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.config.settings import VoiceSettings
from moltis_desktop.core.paths import private_dir
from moltis_desktop.voice.audio import CHUNK_SAMPLES, SAMPLE_RATE, wav_bytes
from moltis_desktop.voice.chimes import CHIME_RATE, chime
from moltis_desktop.voice.directive import speakable, split_directive
from moltis_desktop.voice.echo import EchoGuard
from moltis_desktop.voice.errors import VoiceError
from moltis_desktop.voice.tts import VoiceOptions
from moltis_desktop.voice.vad import WINDOW as WINDOW_SAMPLES

if TYPE_CHECKING:
    from moltis_desktop.voice.audio import AudioSink, AudioSource, Pcm
    from moltis_desktop.voice.stt import Transcriber, Transcript
    from moltis_desktop.voice.tts import SpeechProvider
    from moltis_desktop.voice.vad import Vad
    from moltis_desktop.voice.wakeword import WakeWordDetector

_LOGGER = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
Ask = Callable[[str], Awaitable[str]]

WAKE_LEAD_IN_S = 2.0
"""Audio from before the wake fired that starts the question: the whole wake phrase (the
detector fires a few hundred ms after it ends, and scores a 2 s window), so that Whisper
hears the phrase and the question as they were said; the phrase is stripped from the text."""
BARGE_IN_LEAD_IN_S = 0.5
"""Audio from before a barge-in that starts the question (more would be the reply's echo)."""
_SPECULATE_MS = 240
"""Silence after speech at which transcription starts, before the utterance is known to
have ended: when the silence lasts, the transcript is ready about as soon as it does."""
_BARGE_IN_WINDOWS = 3
"""Consecutive 32 ms speech windows that count as the user talking over a reply."""
_WAKE_WORDS = re.compile(
    r"^\s*(?:(?:hey|hi|ok|okay)[,\s]+)?(?:jarvis|alexa|mycroft|rhasspy|nabu)\b[\s,.!?]*",
    re.I,
)


@dataclass
class Turn:
    """One question and its answer, with when each stage happened (monotonic seconds)."""

    source: str
    """`wake`, `push-to-talk`, `talk` or `barge-in`."""
    score: float = 0.0
    speech_end: float = 0.0
    transcript: str = ""
    reply: str = ""
    first_audio: float = 0.0
    interrupted: bool = False


class VoicePipeline:
    """The loop. `ask` sends a transcript to the assistant and returns its reply."""

    def __init__(
        self,
        *,
        source: AudioSource,
        sink: AudioSink,
        detector: WakeWordDetector | None,
        vad: Vad,
        transcriber: Transcriber,
        tts: Callable[[], SpeechProvider],
        ask: Ask,
        settings: Callable[[], VoiceSettings] = VoiceSettings,
        on_event: EventCallback | None = None,
        recordings_dir: Path | None = None,
        chime_sink: AudioSink | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.chime_sink = chime_sink or sink
        self.detector = detector
        self.vad = vad
        self.transcriber = transcriber
        self.tts = tts
        self.ask = ask
        self.settings = settings
        self.on_event = on_event or (lambda kind, data: None)
        self.recordings_dir = recordings_dir
        self.state = "idle"
        self.talk_mode = False
        self.voice_default = VoiceOptions()
        """Talk mode's voice, as the last persistent directive left it."""
        self.turns: list[Turn] = []
        self._mode = "wake"
        self._capture: list[Pcm] = []
        self._capture_started = 0.0
        self._speech_seen = False
        self._silence = 0
        self.wake_lead_in_s = WAKE_LEAD_IN_S
        """Seconds of audio before a wake that the question's transcript starts with (the
        benchmark compares values)."""
        self._recent: deque[Pcm] = deque(
            maxlen=max(1, round(WAKE_LEAD_IN_S * SAMPLE_RATE / CHUNK_SAMPLES))
        )
        self._lead_chunks = 0
        self._wake_phrase = ""
        self._barge_run = 0
        self._work: asyncio.Task[None] | None = None
        self._trigger: str | None = None
        self._turn: Turn | None = None
        self._speculation: asyncio.Task[Transcript] | None = None
        self.echo = EchoGuard()
        """Tells the user's voice from the reply's echo during playback (barge-in)."""
        self.done = asyncio.Event()

    # ------------------------------------------------------------------ control

    def push_to_talk(self) -> None:
        """Start a question now, without the wake word (tray action, global shortcut)."""
        self._trigger = "push-to-talk"

    def set_talk_mode(self, enabled: bool) -> None:
        """Talk mode: keep listening after each reply until a stop phrase or silence."""
        if enabled == self.talk_mode:
            return
        self.talk_mode = enabled
        self._emit("talk.mode", {"enabled": enabled, "phase": self.state})
        if enabled and self._mode == "wake":
            self._trigger = "talk"
        elif not enabled and self._mode == "capture" and self._turn and self._turn.source == "talk":
            self._to_wake()

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.on_event(kind, data)
        except Exception:  # an observer's bug must not stop the loop
            _LOGGER.exception("voice event observer failed on %s", kind)

    def _set_state(self, state: str, **data: Any) -> None:
        self.state = state
        self._emit("state", {"state": state, "talkMode": self.talk_mode, **data})

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Read the source until it ends (or the task is cancelled). A failure (the
        microphone gone, say) ends it with an `error` event, never an exception."""
        self._set_state("listening" if self.detector else "idle")
        try:
            async for chunk in self.source.chunks():
                await self._on_chunk(chunk)
            # The source ended (a file): let the last question finish.
            if self._mode == "capture" and self._speech_seen:
                self._finish_capture()
            if self._work is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._work
        except Exception as exc:
            self._failed(exc, "voice stopped")
        finally:
            if self._work is not None and not self._work.done():
                self._work.cancel()
            self._set_state("off")
            self.done.set()

    async def _on_chunk(self, chunk: Pcm) -> None:
        if self._trigger is not None and self._mode in ("wake", "busy"):
            source, self._trigger = self._trigger, None
            if self._mode == "busy":
                self._interrupt()
            self._start_capture(Turn(source), lead_in_s=0.0)
        if self._mode == "wake":
            await self._listen_for_wake(chunk)
        elif self._mode == "capture":
            await self._capture_chunk(chunk)
        elif self._mode == "busy":
            await self._watch_for_barge_in(chunk)

    async def _listen_for_wake(self, chunk: Pcm) -> None:
        self._recent.append(chunk)
        if self.detector is None:
            return
        detections = await asyncio.to_thread(self.detector.process, chunk)
        if not detections:
            return
        best = max(detections, key=lambda d: d.score)
        _LOGGER.info("wake word %s (score %.3f)", best.model, best.score)
        self._emit("wake", {"model": best.model, "score": round(best.score, 3)})
        self._wake_phrase = best.phrase
        self._start_capture(Turn("wake", score=best.score), lead_in_s=self.wake_lead_in_s)

    def _start_capture(self, turn: Turn, *, lead_in_s: float) -> None:
        settings = self.settings()
        self._turn = turn
        self._mode = "capture"
        keep = round(lead_in_s * SAMPLE_RATE / CHUNK_SAMPLES)
        self._capture = list(self._recent)[-keep:] if keep else []
        self._lead_chunks = len(self._capture)
        self._recent.clear()
        self._capture_started = time.monotonic()
        self._speculation = None
        self._speech_seen = False
        self._silence = 0
        self.vad.reset()
        if settings.chimes.on_wake and turn.source in ("wake", "push-to-talk"):
            self._chime("wake")
        self._set_state("capturing", source=turn.source)

    async def _capture_chunk(self, chunk: Pcm) -> None:
        settings = self.settings().talk
        self._capture.append(chunk)
        speech = await asyncio.to_thread(self.vad.is_speech, chunk)
        chunk_ms = CHUNK_SAMPLES * 1000 // SAMPLE_RATE
        if speech:
            self._speech_seen = True
            self._silence = 0
            self._speculation = None  # the user went on: that transcript is stale
        else:
            self._silence += chunk_ms
        heard_s = len(self._capture) * CHUNK_SAMPLES / SAMPLE_RATE
        if not self._speech_seen:
            wait = (
                settings.idle_timeout_s
                if self._turn_source() == "talk"
                else settings.start_timeout_s
            )
            if heard_s >= wait:
                if self._turn_source() == "talk":
                    self._emit("talk.timeout", {})
                    self.talk_mode = False
                    self._emit("talk.mode", {"enabled": False, "phase": "timeout"})
                self._to_wake()
            elif heard_s > 1.0 and not self._speech_seen:
                # Nothing said yet: keep the lead-in (the wake phrase) and the last second.
                second = int(SAMPLE_RATE / CHUNK_SAMPLES)
                lead, rest = self._capture[: self._lead_chunks], self._capture[self._lead_chunks :]
                if len(rest) > second:
                    self._capture = lead + rest[-second:]
            return
        if self._silence >= settings.end_silence_ms or heard_s >= settings.max_utterance_s:
            self._finish_capture()
        elif self._silence >= _SPECULATE_MS and self._speculation is None:
            audio = self._utterance()
            self._speculation = asyncio.get_running_loop().create_task(
                self.transcriber.transcribe(audio)
            )
            # A speculation overtaken by more speech is dropped, never awaited.
            self._speculation.add_done_callback(lambda t: None if t.cancelled() else t.exception())

    def _turn_source(self) -> str:
        return self._turn.source if self._turn else ""

    def _utterance(self) -> Pcm:
        """The audio captured so far, with at most `grace_ms` of the trailing silence."""
        import numpy as np

        settings = self.settings().talk
        drop = max(0, self._silence - settings.grace_ms) * SAMPLE_RATE // 1000
        audio: Pcm = np.concatenate(self._capture)
        return audio[: len(audio) - drop] if drop else audio

    def _finish_capture(self) -> None:
        assert self._turn is not None
        audio = self._utterance()
        speculation, self._speculation = self._speculation, None
        self._turn.speech_end = time.monotonic() - self._silence / 1000.0
        self._capture = []
        self._mode = "busy"
        self._barge_run = 0
        self.vad.reset()
        self._work = asyncio.get_running_loop().create_task(
            self._respond(self._turn, audio, speculation)
        )

    def _to_wake(self) -> None:
        self._mode = "wake"
        self._capture = []
        self._turn = None
        if self.detector is not None:
            self.detector.reset()
        if self.talk_mode:
            self._trigger = "talk"
        self._set_state("listening" if self.detector else "idle")

    # ------------------------------------------------------------------ barge-in

    async def _watch_for_barge_in(self, chunk: Pcm) -> None:
        if self.state != "speaking" or not self.settings().talk.interrupt_on_speech:
            return
        self._recent.append(chunk)
        arrived = time.monotonic()
        probs = await asyncio.to_thread(self.vad.probabilities, chunk)
        step = WINDOW_SAMPLES
        for k, p in enumerate(probs):
            window = chunk[k * step : (k + 1) * step]
            at = arrived - (len(probs) - 1 - k) * step / SAMPLE_RATE
            user = self.echo.louder_than_echo(window, at)
            self._barge_run = self._barge_run + 1 if p >= self.vad.threshold and user else 0
        if self._barge_run >= _BARGE_IN_WINDOWS:
            _LOGGER.info("barge-in: the user spoke over the reply")
            self._emit("barge-in", {})
            self._interrupt()
            self._start_capture(Turn("barge-in"), lead_in_s=BARGE_IN_LEAD_IN_S)

    def _interrupt(self) -> None:
        if self._turn is not None:
            self._turn.interrupted = True
        self.sink.stop()
        if self._work is not None and not self._work.done():
            self._work.cancel()
        self._work = None

    # ------------------------------------------------------------------ one question

    async def _respond(
        self, turn: Turn, audio: Pcm, speculation: asyncio.Task[Transcript] | None = None
    ) -> None:
        try:
            await self._respond_inner(turn, audio, speculation)
        except Exception as exc:
            self._failed(exc, "the voice turn failed")
        if self._mode == "busy" and self._work is asyncio.current_task():
            self._work = None
            self._to_wake()

    def _failed(self, exc: Exception, what: str) -> None:
        """Log a failure and say it as an `error` event: ours with their own message (it
        says what to do), anything else as a bug with its traceback in the log."""
        if isinstance(exc, VoiceError):
            _LOGGER.error("%s: %s", what, exc)
            self._emit("error", {"message": str(exc)})
        else:
            _LOGGER.error("%s", what, exc_info=exc)
            self._emit("error", {"message": f"{type(exc).__name__}: {exc}"})

    async def _respond_inner(
        self, turn: Turn, audio: Pcm, speculation: asyncio.Task[Transcript] | None
    ) -> None:
        settings = self.settings()
        self._set_state("transcribing")
        self._keep(audio)
        # Started during the silence that ended the question (same speech, a little less
        # trailing silence), so usually finished by now.
        result = await (speculation or self.transcriber.transcribe(audio))
        text = (
            strip_wake_phrase(result.text, self._wake_phrase)
            if turn.source == "wake"
            else result.text
        )
        turn.transcript = text
        self._emit(
            "transcript",
            {"text": text, "language": result.language, "seconds": round(result.elapsed_s, 3)},
        )
        if not _words(text):
            return
        if self.talk_mode and _words(text) in {_words(p) for p in settings.talk.stop_phrases}:
            self.set_talk_mode(False)
            return
        if settings.chimes.on_send:
            self._chime("send")
        self._set_state("thinking")
        reply = await asyncio.wait_for(self.ask(text), settings.talk.reply_timeout_s)
        directive, spoken = split_directive(reply)
        turn.reply = spoken
        self.turns.append(turn)
        self._emit("reply", {"text": spoken, "directive": directive is not None})
        options = self.voice_default
        if directive is not None:
            options = VoiceOptions(
                voice=directive.voice or options.voice,
                speed=directive.speed or options.speed,
            )
            if not directive.once:
                self.voice_default = options
        if not settings.tts.enabled:
            return
        if options.speed == 1.0 and settings.tts.speed != 1.0:
            options = replace(options, speed=settings.tts.speed)
        await self.speak(speakable(spoken, settings.tts.max_chars), options, turn)

    async def speak(self, text: str, options: VoiceOptions, turn: Turn | None = None) -> bool:
        """Say `text`; True when it was said to the end (not interrupted)."""
        if not text.strip():
            return True
        self._set_state("speaking")
        self.echo.reset()
        provider = self.tts()
        async for pcm, rate in provider.stream(text, options):
            if turn is not None and not turn.first_audio:
                turn.first_audio = time.monotonic()
                self._emit("speaking", {"provider": provider.id})
            self.echo.playing(pcm, rate)
            if not await self.sink.play(pcm, rate):
                return False
        return True

    def _chime(self, kind: str) -> None:
        volume = self.settings().chimes.volume
        if volume <= 0:
            return
        task = asyncio.get_running_loop().create_task(
            self.chime_sink.play(chime(kind, volume), CHIME_RATE)
        )
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _keep(self, audio: Pcm) -> None:
        if not self.settings().keep_audio or self.recordings_dir is None:
            return
        private_dir(self.recordings_dir)
        name = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}.wav"
        (self.recordings_dir / name).write_bytes(wav_bytes(audio, SAMPLE_RATE))


_WORD = re.compile(r"[\w']+")


def strip_wake_phrase(text: str, phrase: str = "") -> str:
    """The question in a transcript that starts with the wake phrase (and maybe words said
    before it): everything up to the end of the phrase goes. Whisper writes the phrase in
    many ways ("Hey Jarvis,", "Hey, Jarvis.", "Hey Jervis", "A Jarvis", "Jarvis"), so the
    known forms go first, then the words among the first few that sound most like it
    (letters alike by at least 60 %, the name alone by 70 %)."""
    import difflib

    stripped = _WAKE_WORDS.sub("", text, count=1)
    if stripped != text:
        return stripped.strip()
    target = " ".join((phrase or "hey jarvis").lower().replace("_", " ").split())
    name = target.split()[-1]
    words = list(_WORD.finditer(text))
    best_end, best_score = -1, 0.0
    for start in range(min(4, len(words))):
        for size in (1, 2, 3):
            window = words[start : start + size]
            if len(window) < size:
                break
            said = " ".join(w.group().lower() for w in window)
            score = difflib.SequenceMatcher(None, said, target).ratio()
            if size == 1:
                score = max(score, difflib.SequenceMatcher(None, said, name).ratio() - 0.1)
            if score > best_score:
                best_end, best_score = window[-1].end(), score
    if best_score >= 0.6:
        return text[best_end:].lstrip(" ,.!?;:-").strip()
    return text.strip()


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())
