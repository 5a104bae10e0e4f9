"""`moltis voice devices|listen|say`: check the voice set-up from a terminal.

`listen` runs the whole pipeline on this machine (the microphone or a WAV file) and asks
the running gateway, like the tray does; `say` needs no gateway at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from moltis_desktop.cli.output import print_json, run
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.protocol.constants import Scope


def add_voice_parser(sub: Any, client_flags: Any) -> None:
    voice = sub.add_parser("voice", help="voice on this machine: devices, listen, say")
    actions = voice.add_subparsers(dest="voice_command", metavar="ACTION")
    actions.required = True
    devices = actions.add_parser("devices", help="list microphones and speakers")
    devices.add_argument("--json", action="store_true", help="print JSON for scripts")

    listen = actions.add_parser(
        "listen",
        help="run the voice pipeline (wake word, transcript, reply) and print each stage",
    )
    listen.add_argument("--input", "-i", type=Path, help="a WAV file instead of the microphone")
    listen.add_argument(
        "--no-wake", action="store_true", help="no wake word: the first speech is the question"
    )
    listen.add_argument(
        "--no-send",
        action="store_true",
        help="only print what was heard; do not ask the assistant",
    )
    listen.add_argument(
        "--output", "-o", type=Path, help="write the spoken reply to this WAV file (no playback)"
    )
    listen.add_argument("--no-speak", action="store_true", help="do not speak the reply")
    listen.add_argument(
        "--once", action="store_true", help="stop after the first reply (microphone)"
    )
    client_flags(listen)

    say = actions.add_parser("say", help="speak text (or write it to a WAV file)")
    say.add_argument("text", help="what to say")
    say.add_argument("--output", "-o", type=Path, help="write a WAV file instead of playing")
    say.add_argument("--voice", default="", help="piper voice id or .onnx path (default: config)")
    say.add_argument("--speed", type=float, default=0.0, help="speaking rate, 1.0 = normal")
    say.add_argument("--provider", choices=["piper", "openai"], help="default: the config's")


def _service() -> Any:
    import os

    from moltis_desktop.cli.connect import local_config
    from moltis_desktop.core.paths import AppPaths
    from moltis_desktop.voice.models import ModelManager
    from moltis_desktop.voice.service import VoiceService

    store = local_config()
    settings = store.current.settings.voice
    paths = AppPaths.resolve()
    mirror = os.environ.get("MOLTIS_MODEL_MIRROR") or settings.model_mirror
    models = ModelManager(paths.cache_dir / "voice", mirror=mirror)
    return VoiceService(models, settings=lambda: store.current.settings.voice)


def _without_speech(settings: Any) -> Any:
    """`settings` (a getter) with speech off: replies are not synthesised at all."""
    from dataclasses import replace

    def current() -> Any:
        voice = settings()
        return replace(voice, tts=replace(voice.tts, enabled=False))

    return current


def cmd_voice(args: argparse.Namespace) -> int:
    if args.voice_command == "devices":
        return _devices(args)
    if args.voice_command == "say":
        return int(run(_say(args)))
    return int(run(_listen(args)))


def _devices(args: argparse.Namespace) -> int:
    from moltis_desktop.voice.audio import list_devices

    devices = list_devices()
    if args.json:
        print_json({"devices": [d.as_dict() for d in devices]})
        return 0
    if not devices:
        print(
            "no audio devices: plug in a microphone or speakers, or start PulseAudio/PipeWire "
            "(`pactl info` says whether it runs)",
            file=sys.stderr,
        )
        return 1
    print(f"{'#':>3}  {'in':>3} {'out':>3}  {'rate':>6}  name")
    for d in devices:
        marks = ("*in" if d.default_input else "") + ("*out" if d.default_output else "")
        print(
            f"{d.index:>3}  {d.inputs:>3} {d.outputs:>3}  {int(d.default_rate):>6}  "
            f"{d.name} ({d.host_api}) {marks}".rstrip()
        )
    print('\nSet one with `moltis config set voice.input_device "<name or #>"`.')
    return 0


async def _say(args: argparse.Namespace) -> int:
    from moltis_desktop.voice.audio import Speaker, wav_bytes

    service = _service()
    speech = await service.synthesize(
        args.text, provider=args.provider, voice=args.voice, speed=args.speed
    )
    print(
        f"{speech.duration_s:.2f} s of speech from {speech.provider} in {speech.elapsed_s:.2f} s "
        f"(first audio after {speech.first_audio_s * 1000:.0f} ms)",
        file=sys.stderr,
    )
    if args.output:
        args.output.write_bytes(wav_bytes(speech.pcm, speech.rate))
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    await Speaker(service.settings().output_device).play(speech.pcm, speech.rate)
    return 0


def _stage_printer(json_lines: bool, not_spoken: str = "") -> Any:
    """Prints each stage; `not_spoken` (why replies are not spoken) is said once, after the
    first reply."""
    told = not not_spoken

    def show(kind: str, data: dict[str, Any]) -> None:
        nonlocal told
        if json_lines:
            print(json.dumps({"event": kind, **data}), flush=True)
        if kind == "reply" and not told:
            told = True
            if json_lines:
                print(json.dumps({"event": "not-spoken", "reason": not_spoken}), flush=True)
            else:
                print(f"(not spoken: {not_spoken})", file=sys.stderr, flush=True)
        if json_lines:
            return
        if kind == "wake":
            print(f"wake word: {data['model']} (score {data['score']:.3f})", flush=True)
        elif kind == "transcript":
            print(f"you said: {data['text']}  [{data['seconds']:.2f} s]", flush=True)
        elif kind == "reply":
            print(f"reply: {data['text']}", flush=True)
        elif kind == "speaking":
            print(f"speaking ({data['provider']})", flush=True)
        elif kind == "barge-in":
            print("(interrupted)", flush=True)
        elif kind == "error":
            print(f"error: {data['message']}", file=sys.stderr, flush=True)
        elif kind == "state" and data.get("state") == "listening":
            print("listening for the wake word…", file=sys.stderr, flush=True)

    return show


async def _ask_gateway(args: argparse.Namespace, text: str) -> str:
    from moltis_desktop.cli.connect import client_for

    run_id = f"voice-{uuid.uuid4()}"
    session = "main"
    async with client_for(args, [Scope.READ, Scope.WRITE]) as client:
        rid = await client.send_request(
            "chat.send", {"sessionKey": session, "message": text, "idempotencyKey": run_id}
        )
        async for frame in client.frames(timeout_s=max(args.timeout, 120.0)):
            if frame.get("type") == "res" and frame.get("id") == rid and not frame.get("ok"):
                raise MoltisError(str((frame.get("error") or {}).get("message")))
            payload = frame.get("payload") or {}
            if frame.get("event") != "chat" or payload.get("runId") != run_id:
                continue
            if payload.get("state") == "final":
                return "".join(
                    b.get("text", "")
                    for b in (payload.get("message") or {}).get("content", [])
                    if isinstance(b, dict)
                )
            if payload.get("state") in ("error", "aborted"):
                raise MoltisError(f"the assistant could not answer: {payload.get('errorMessage')}")
    raise MoltisError("the gateway closed the connection before the reply")


def _forgiving_speaker(device: str) -> Any:
    """The speakers; when they go away mid-run (unplugged), the reply is not spoken, which
    is said once, and the turn goes on (its reply was printed already)."""
    from moltis_desktop.voice.audio import Speaker
    from moltis_desktop.voice.errors import AudioDeviceError

    class ForgivingSpeaker(Speaker):
        told = False

        async def play(self, pcm: Any, rate: int) -> bool:
            try:
                return await super().play(pcm, rate)
            except AudioDeviceError as exc:
                if not self.told:
                    self.told = True
                    print(f"(not spoken: {exc.message})", file=sys.stderr, flush=True)
                return True

    return ForgivingSpeaker(device)


async def _speaker_missing(device: str) -> str:
    """Why there is no speaker to play replies on ("" when there is one)."""
    from moltis_desktop.voice.audio import resolve_device
    from moltis_desktop.voice.errors import AudioDeviceError

    try:
        await asyncio.to_thread(resolve_device, device, "output")
    except AudioDeviceError as exc:
        return exc.message
    return ""


async def _why_not_spoken(args: argparse.Namespace, output_device: str) -> str:
    """Why replies will not be spoken when they should be ("" when they will): no speaker
    here (a server, a container). The replies are printed all the same and the run still
    succeeds; `-o` writes the speech to a file instead, and needs no speaker."""
    if args.output is not None or args.no_speak or args.no_send:
        return ""
    missing = await _speaker_missing(output_device)
    if missing and args.input:
        return f"{missing}; use -o reply.wav to keep the audio"
    return missing


async def _listen(args: argparse.Namespace) -> int:
    from moltis_desktop.voice.audio import MemorySink, Microphone, WavSource, wav_bytes

    service = _service()
    not_spoken = await _why_not_spoken(args, service.settings().output_device)
    if args.no_speak or not_spoken:
        service.settings = _without_speech(service.settings)
    show = _stage_printer(args.json, not_spoken)
    service.observers.append(show)
    done = asyncio.Event()
    replies: list[str] = []

    async def ask(text: str) -> str:
        if args.no_send:
            return ""
        reply = await _ask_gateway(args, text)
        replies.append(reply)
        return reply

    answered = False

    def stop_after_reply(kind: str, data: dict[str, Any]) -> None:
        # --once: stop when the loop is back to listening after a reply was given.
        nonlocal answered
        if kind == "reply":
            answered = True
        elif args.once and answered and kind == "state" and data.get("state") != "speaking":
            done.set()

    service.observers.append(stop_after_reply)
    service.ask = ask
    settings = service.settings()
    source = WavSource(args.input) if args.input else Microphone(settings.input_device)
    quiet = args.output is not None or args.no_speak or args.no_send or bool(not_spoken)
    sink = MemorySink() if quiet else _forgiving_speaker(settings.output_device)
    pipeline = await asyncio.to_thread(
        service.build_pipeline, source, sink, wake=not args.no_wake, chime_sink=MemorySink()
    )
    if args.no_wake:
        pipeline.push_to_talk()
    task = asyncio.get_running_loop().create_task(pipeline.run())
    waiter = asyncio.get_running_loop().create_task(done.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if args.once and not task.done():
        await asyncio.sleep(0)
        task.cancel()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if args.output is not None and isinstance(sink, MemorySink):
        speech = sink.played
        if speech:
            import numpy as np

            args.output.write_bytes(wav_bytes(np.concatenate([p for p, _ in speech]), speech[0][1]))
            print(f"wrote the reply to {args.output}", file=sys.stderr)
    if service.last_error:
        return 1
    if not pipeline.turns and not args.no_send:
        print("nothing was asked (no wake word or no speech heard)", file=sys.stderr)
        return 2
    return 0
