"""Audio in and out: 16 kHz mono PCM, WAV files, resampling, and PortAudio devices.

Everything in the pipeline is 16-bit mono at 16 kHz (what openWakeWord, Silero VAD and
Whisper take). Microphones that cannot record at 16 kHz are opened at their own rate and
resampled; speech from piper (22.05 kHz) is played at its own rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from moltis_desktop.voice.errors import AudioDeviceError, VoiceError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Pcm = npt.NDArray[np.int16]

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The pipeline's sample rate, in Hz."""
CHUNK_SAMPLES = 1280
"""Samples per chunk from a source: 80 ms, openWakeWord's step."""


# ------------------------------------------------------------------------------ PCM helpers


def resample(pcm: Pcm, src_rate: int, dst_rate: int) -> Pcm:
    """`pcm` at `dst_rate`, by linear interpolation (plenty for speech models; scipy is not
    a dependency)."""
    import numpy as np

    if src_rate == dst_rate or len(pcm) == 0:
        return pcm
    n_out = round(len(pcm) * dst_rate / src_rate)
    x_old = np.arange(len(pcm), dtype=np.float64)
    x_new = np.linspace(0, len(pcm) - 1, n_out)
    return np.interp(x_new, x_old, pcm.astype(np.float32)).astype(np.int16)


def to_mono(frames: Any, channels: int) -> Pcm:
    """Interleaved int16 frames as mono (the channels averaged)."""
    import numpy as np

    pcm: Pcm = np.asarray(frames, dtype=np.int16)
    if channels <= 1:
        return pcm.reshape(-1)
    mono: Pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return mono


def read_wav(source: Path | bytes) -> tuple[Pcm, int]:
    """A 16-bit WAV file as mono samples and its rate."""
    import numpy as np

    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as wav:
            if wav.getsampwidth() != 2:
                raise VoiceError(
                    f"{source if isinstance(source, Path) else 'the audio'} is not 16-bit PCM; "
                    "convert it, e.g. `sox in.wav -b 16 out.wav`"
                )
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
            return to_mono(frames, wav.getnchannels()), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise VoiceError(f"cannot read the WAV audio: {exc}") from None
    except FileNotFoundError:
        raise VoiceError(f"no such file: {source!r}") from None


def read_wav_16k(source: Path | bytes) -> Pcm:
    """A WAV file as mono 16 kHz samples."""
    pcm, rate = read_wav(source)
    return resample(pcm, rate, SAMPLE_RATE)


def wav_bytes(pcm: Pcm, rate: int) -> bytes:
    """Mono 16-bit samples as a WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return buf.getvalue()


def float32(pcm: Pcm) -> Any:
    """Samples as float32 in [-1, 1] (what Whisper and the VAD take)."""
    import numpy as np

    return pcm.astype(np.float32) / 32768.0


# ------------------------------------------------------------------------------ sources


class AudioSource(Protocol):
    """Where the pipeline's audio comes from: 16 kHz mono chunks of `CHUNK_SAMPLES`."""

    def chunks(self) -> AsyncIterator[Pcm]: ...


class WavSource:
    """A WAV file as a source (`moltis voice listen --input`), optionally at real-time pace,
    followed by `tail_s` of silence so that the end of the last utterance is heard."""

    def __init__(self, path: Path | bytes, *, realtime: bool = False, tail_s: float = 1.5) -> None:
        self.pcm = read_wav_16k(path)
        self.realtime = realtime
        self.tail_s = tail_s

    async def chunks(self) -> AsyncIterator[Pcm]:
        import numpy as np

        pcm = np.concatenate([self.pcm, np.zeros(int(self.tail_s * SAMPLE_RATE), np.int16)])
        step = CHUNK_SAMPLES / SAMPLE_RATE
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, i in enumerate(range(0, len(pcm), CHUNK_SAMPLES)):
            chunk = pcm[i : i + CHUNK_SAMPLES]
            if len(chunk) < CHUNK_SAMPLES:
                chunk = np.concatenate([chunk, np.zeros(CHUNK_SAMPLES - len(chunk), np.int16)])
            if self.realtime:
                await asyncio.sleep(max(0.0, start + n * step - loop.time()))
            else:
                await asyncio.sleep(0)
            yield chunk


@dataclass(frozen=True)
class AudioDevice:
    """A PortAudio device (`moltis voice devices`)."""

    index: int
    name: str
    host_api: str
    inputs: int
    outputs: int
    default_rate: float
    default_input: bool
    default_output: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "hostApi": self.host_api,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "defaultRate": self.default_rate,
            "defaultInput": self.default_input,
            "defaultOutput": self.default_output,
        }


_NO_PORTAUDIO = (
    "PortAudio is not installed, so there is no microphone or speaker: on Debian/Ubuntu run "
    "`sudo apt-get install libportaudio2`; on macOS it comes with the app"
)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError:
        raise AudioDeviceError(_NO_PORTAUDIO) from None
    return sounddevice


def list_devices() -> list[AudioDevice]:
    """Every audio device PortAudio sees."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from None
    out = []
    for index, dev in enumerate(devices):
        out.append(
            AudioDevice(
                index=index,
                name=str(dev["name"]),
                host_api=str(apis[dev["hostapi"]]["name"]),
                inputs=int(dev["max_input_channels"]),
                outputs=int(dev["max_output_channels"]),
                default_rate=float(dev["default_samplerate"]),
                default_input=index == default_in,
                default_output=index == default_out,
            )
        )
    return out


_HINT = {
    "input": (
        "no microphone found: plug one in, or check that PulseAudio/PipeWire is running "
        "(`pactl info`); on macOS allow Moltis in System Settings → Privacy & Security → "
        "Microphone. `moltis voice devices` lists what is there"
    ),
    "output": (
        "no speaker found: check your sound output (`pactl info` on Linux); `moltis voice "
        "devices` lists what is there"
    ),
}


def resolve_device(spec: str, kind: str) -> int | None:
    """The device index for a setting: "" means the default, a number an index, text a part
    of a device's name. Raises AudioDeviceError with what to do when there is none."""
    devices = list_devices()
    usable = [d for d in devices if (d.inputs if kind == "input" else d.outputs) > 0]
    if not usable:
        raise AudioDeviceError(_HINT[kind])
    if not spec:
        return None
    if spec.isdigit():
        index = int(spec)
        if any(d.index == index for d in usable):
            return index
    else:
        for dev in usable:
            if spec.lower() in dev.name.lower():
                return dev.index
    names = ", ".join(f"{d.index}: {d.name}" for d in usable)
    raise AudioDeviceError(f"no {kind} device matches {spec!r}; the ones there are: {names}")


class Microphone:
    """A live microphone as a source: PortAudio's callback thread hands 16 kHz mono chunks
    to the event loop. Nothing is kept beyond the queue of chunks not yet read."""

    STALL_S = 5.0
    """No audio for this long means the microphone is gone (unplugged, taken away)."""

    def __init__(self, device: str = "", *, max_queue: int = 64) -> None:
        self.device = device
        self.max_queue = max_queue
        self.dropped = 0

    async def _next(self, queue: asyncio.Queue[Pcm | None]) -> Pcm:
        """The next chunk; the stream ending (None) or going quiet is the device gone."""
        try:
            # Not asyncio.wait_for: on Python 3.11 it loses a cancellation that lands as a
            # chunk arrives, and the voice loop would then never stop.
            async with asyncio.timeout(self.STALL_S):
                chunk = await queue.get()
        except TimeoutError:
            chunk = None
        if chunk is None:
            raise AudioDeviceError(
                "the microphone stopped sending audio (unplugged, or taken by another app?); "
                "check it and turn listening on again. " + _HINT["input"]
            )
        return chunk

    async def chunks(self) -> AsyncIterator[Pcm]:
        import numpy as np

        sd = _sounddevice()
        index = await asyncio.to_thread(resolve_device, self.device, "input")
        rate = SAMPLE_RATE
        try:
            sd.check_input_settings(device=index, channels=1, dtype="int16", samplerate=rate)
        except Exception:  # the device has its own rate: record at it and resample
            info = sd.query_devices(index, "input")
            rate = int(info["default_samplerate"])
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Pcm | None] = asyncio.Queue(self.max_queue + 1)

        def put(chunk: Pcm | None) -> None:
            if queue.full():  # the consumer fell behind: drop the oldest, keep it live
                self.dropped += 1
                queue.get_nowait()
            queue.put_nowait(chunk)

        def callback(indata: Any, frames: int, time: Any, status: Any) -> None:
            chunk = np.frombuffer(bytes(indata), dtype=np.int16).copy()
            loop.call_soon_threadsafe(put, chunk)

        blocksize = round(CHUNK_SAMPLES * rate / SAMPLE_RATE)
        try:
            stream = sd.RawInputStream(
                device=index,
                channels=1,
                dtype="int16",
                samplerate=rate,
                blocksize=blocksize,
                callback=callback,
                finished_callback=lambda: loop.call_soon_threadsafe(put, None),
            )
            stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot open the microphone: {exc}. {_HINT['input']}") from None
        _LOGGER.info(
            "microphone open (device %s, %d Hz)", index if index is not None else "default", rate
        )
        pending = np.zeros(0, np.int16)
        try:
            while True:
                chunk = await self._next(queue)
                if rate != SAMPLE_RATE:
                    chunk = resample(chunk, rate, SAMPLE_RATE)
                pending = np.concatenate([pending, chunk])
                while len(pending) >= CHUNK_SAMPLES:
                    yield pending[:CHUNK_SAMPLES]
                    pending = pending[CHUNK_SAMPLES:]
        finally:
            with contextlib.suppress(Exception):
                stream.stop()
                stream.close()
            _LOGGER.info("microphone closed")


# ------------------------------------------------------------------------------ sinks


class AudioSink(Protocol):
    """Where speech goes. `play` returns when the audio has been played or `stop` was
    called; it answers True when it played to the end."""

    async def play(self, pcm: Pcm, rate: int) -> bool: ...

    def stop(self) -> None: ...


class Speaker:
    """The speakers, through PortAudio. `stop` cuts playback within one block (~20 ms)."""

    BLOCK_S = 0.02

    def __init__(self, device: str = "") -> None:
        self.device = device
        self._stop = threading.Event()
        self.playing = False

    def stop(self) -> None:
        self._stop.set()

    async def play(self, pcm: Pcm, rate: int) -> bool:
        import numpy as np

        sd = _sounddevice()
        index = await asyncio.to_thread(resolve_device, self.device, "output")
        self._stop.clear()
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[bool] = loop.create_future()
        position = 0
        block = max(1, int(rate * self.BLOCK_S))

        def done(value: bool) -> None:
            if not finished.done():
                finished.set_result(value)

        def callback(outdata: Any, frames: int, time: Any, status: Any) -> None:
            nonlocal position
            if self._stop.is_set():
                outdata[:] = b"\x00" * len(outdata)
                loop.call_soon_threadsafe(done, False)
                raise sd.CallbackStop
            part = pcm[position : position + frames]
            position += len(part)
            buf = np.zeros(frames, np.int16)
            buf[: len(part)] = part
            outdata[:] = buf.tobytes()
            if len(part) < frames:
                raise sd.CallbackStop

        def on_finished() -> None:
            loop.call_soon_threadsafe(done, not self._stop.is_set())

        try:
            stream = sd.RawOutputStream(
                device=index,
                channels=1,
                dtype="int16",
                samplerate=rate,
                blocksize=block,
                callback=callback,
                finished_callback=on_finished,
            )
            stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot open the speakers: {exc}. {_HINT['output']}") from None
        self.playing = True
        try:
            return await finished
        finally:
            self.playing = False
            with contextlib.suppress(Exception):
                stream.close()


class MemorySink:
    """Speech kept in memory instead of played (`moltis voice say -o`, tests, benchmarks).
    With `realtime`, `play` takes as long as the audio lasts, and `stop` cuts it short, like
    a speaker would."""

    def __init__(self, *, realtime: bool = False) -> None:
        self.realtime = realtime
        self.played: list[tuple[Pcm, int]] = []
        self.stopped_at: list[float] = []
        self._stop = asyncio.Event()
        self.playing = False

    def stop(self) -> None:
        self._stop.set()

    async def play(self, pcm: Pcm, rate: int) -> bool:
        self._stop.clear()
        self.played.append((pcm, rate))
        if not self.realtime:
            return True
        self.playing = True
        try:
            await asyncio.wait_for(self._stop.wait(), len(pcm) / rate)
        except TimeoutError:
            return True
        finally:
            self.playing = False
        self.stopped_at.append(asyncio.get_running_loop().time())
        return False
