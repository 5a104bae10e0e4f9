"""Agent benchmark: the gateway's added latency per streamed delta, and turns per second.

The fake provider (OpenAI Chat Completions or Anthropic Messages on the wire) and the
measuring WebSocket client run in this process, pinned to core 0; `moltis gateway` runs as
a separate process pinned to core 1 and talks to the fake through the real SDK, as with a
real provider. Every delta carries its send time (`<t=…>`, `time.perf_counter()`, the
system-wide monotonic clock, so the stamps of this process are comparable across its
tasks); the client reads the gateway's `agent` events (stream "assistant", one per delta)
and takes receive - send.

Latency modes, per wire API:
  lockstep  full speed with one delta in flight: the next is sent as soon as the client
            has the previous one (the gateway's per-delta cost, without queueing)
  paced     one delta every --interval-ms (1 ms: far faster than any model streams)
  burst     all deltas back to back, as fast as the fake can write them (a throughput
            test: the latency is mostly time spent waiting in queues)
Baselines, lockstep and paced: `direct` (the client reads the fake's SSE stream itself: one
loopback hop plus this process's own costs) and `relay` (a minimal aiohttp relay process on
core 1, uvloop like the gateway: SSE in, one WebSocket text frame per delta out; no SDK, no
protocol, no transcript).

Turns: the fake answers instantly ("ok" in two deltas); sequential turns on one session,
then concurrent turns on several sessions, all on one client; then a paced stream on a new
session while turns keep starting on the long sequential one (what one long conversation
costs every other stream).

    .venv/bin/python bench/bench_agent.py [--quick] [--kinds openai,anthropic] [--profile]

Prints a table and the JSON; writes bench/results/agent-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from bench_common import free_port, machine, save_results

ROOT = Path(__file__).resolve().parent.parent
MOLTIS = Path(sys.executable).parent / "moltis"
TOKEN = "bench-agent-token"
KEY = "fake-key-0123456789"
MODEL = "fake-model-1"
STAMP = re.compile(r"<t=([0-9.]+)>")
PLACEHOLDER = "@@DELTA@@"
INSTANT = b"[instant]"
"""Requests of sessions whose messages carry this are answered instantly, whatever the plan."""
GATEWAY_CPU, BENCH_CPU = "1", "0"
TARGET_P99_MS = 2.0
STEP_S = 30.0
"""Bound of any single wait."""


# ------------------------------------------------------------------------------ stats


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p90, p99, max (ms, rounded to µs)."""
    if not values_ms:
        return {"n": 0}
    ordered = sorted(values_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    return {
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), 3),
        "p50": round(pct(50), 3),
        "p90": round(pct(90), 3),
        "p99": round(pct(99), 3),
        "max": round(ordered[-1], 3),
    }


def pin(cpu: str) -> bool:
    """Pin this process to `cpu` when the machine has at least two cores."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(0, {int(cpu)})
    return True


def taskset(cmd: list[str], cpu: str) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", cpu, *cmd]
    return cmd


# ------------------------------------------------------------------------------ the fake


class Stream:
    """The SSE bytes of one streamed reply in one wire API: head, deltas, tail."""

    def __init__(self, kind: str, include_usage: bool) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.support import fake_wire as wire

        turn = wire.Turn(text=PLACEHOLDER, chunks=1)
        if kind == "openai":
            events = wire.openai_chunks(turn, MODEL, 1, include_usage=include_usage)
        else:
            events = wire.anthropic_events(turn, MODEL, 1)
        at = next(i for i, e in enumerate(events) if e.content)
        self.head = b"".join(e.encode() for e in events[:at])
        self.tail = b"".join(e.encode() for e in events[at + 1 :])
        prefix, suffix = events[at].encode().split(PLACEHOLDER.encode())
        self._prefix, self._suffix = prefix, suffix

    def delta(self, text: str) -> bytes:
        """One delta event (`text` must need no JSON escaping)."""
        return self._prefix + text.encode() + self._suffix


@dataclass
class Plan:
    """What the fake streams for the next model calls."""

    mode: str = "instant"
    """`instant` ("ok"), `lockstep`, `paced` or `burst` (stamped deltas)."""
    deltas: int = 0
    interval_s: float = 0.001
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the client when it has the delta just sent (lockstep)."""
    sent: int = 0


class FakeProvider:
    """A minimal OpenAI / Anthropic streaming endpoint on a free loopback port."""

    def __init__(self) -> None:
        self.plan = Plan()
        self._streams: dict[tuple[str, bool], Stream] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.calls = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stream(self, kind: str, include_usage: bool = True) -> Stream:
        key = (kind, include_usage)
        if key not in self._streams:
            self._streams[key] = Stream(kind, include_usage)
        return self._streams[key]

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._serve(request, self.stream("openai", usage), INSTANT in raw)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        return await self._serve(request, self.stream("anthropic"), INSTANT in raw)

    async def _serve(
        self, request: web.Request, stream: Stream, instant: bool
    ) -> web.StreamResponse:
        self.calls += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(stream.head)
        plan = self.plan
        if plan.mode == "instant" or instant:
            await response.write(stream.delta("o"))
            await response.write(stream.delta("k"))
        else:
            await self.stamped(plan, stream.delta, response.write)
        await response.write(stream.tail)
        await response.write_eof()
        return response

    @staticmethod
    async def stamped(
        plan: Plan, encode: Callable[[str], bytes], write: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Send `plan.deltas` deltas, each stamped with its send time."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(plan.deltas):
            if plan.mode == "paced":
                wait = start + i * plan.interval_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            plan.acked.clear()
            await write(encode(f"<t={time.perf_counter():.7f}> w{i}"))
            plan.sent = i + 1
            if plan.mode == "lockstep":
                await asyncio.wait_for(plan.acked.wait(), STEP_S)
            elif plan.mode == "burst":
                await asyncio.sleep(0)  # let the client read in between


# ------------------------------------------------------------------------------ processes


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    port: int
    home: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """CPU seconds the process (and its threads) used so far."""
        with contextlib.suppress(Exception):
            import psutil

            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)
        return float("nan")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 5)


async def wait_ready(proc: asyncio.subprocess.Process, port: int, agent: bool) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"process on {port} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as res:
                    if res.status == 200:
                        body = await res.json(content_type=None)
                        if not agent or body.get("agent") == "ready":
                            return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing ready on port {port}")


async def start_gateway(kind: str, fake: FakeProvider, profile: Path | None) -> Proc:
    """`moltis gateway` on core 1, its provider `fake` speaking `kind`."""
    home = Path(tempfile.mkdtemp(prefix="moltis-bench-agent-"))
    (home / "config").mkdir()
    base = fake.url if kind == "anthropic" else f"{fake.url}/v1"
    (home / "config" / "moltis.toml").write_text(
        f"""
[agents]
model = "fake/{MODEL}"

[providers.fake]
kind = "{kind}"
base_url = "{base}"
api_key_env = "FAKE_LLM_KEY"
max_retries = 0

[session.reset]
mode = "never"
"""
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTIS_")}
    env.update(MOLTIS_HOME=str(home), MOLTIS_TOKEN=TOKEN, FAKE_LLM_KEY=KEY)
    cmd = [str(MOLTIS), "gateway", "--port", str(port), "--log-level", "warning"]
    if profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), *cmd]
    with (home / "gateway.out").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *taskset(cmd, GATEWAY_CPU), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    await wait_ready(proc, port, agent=True)
    return Proc(proc, port, home)


async def start_relay(kind: str, fake: FakeProvider) -> Proc:
    """This script's own `--relay` mode, as a process on core 1."""
    port = free_port()
    cmd = [sys.executable, __file__, "--relay", str(port), kind, fake.url]
    proc = await asyncio.create_subprocess_exec(*taskset(cmd, GATEWAY_CPU))
    await wait_ready(proc, port, agent=False)
    return Proc(proc, port, Path(tempfile.gettempdir()))


# ------------------------------------------------------------------------------ the client


class Client:
    """A lean protocol client: one WebSocket, frames routed by request id and run id."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._finals: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.on_delta: Callable[[float, str], None] | None = None
        """Called with (receive time, raw frame) for each assistant delta event."""

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        challenge = await self.ws.receive_json(timeout=STEP_S)
        assert challenge["event"] == "connect.challenge", challenge
        self._reader = asyncio.get_running_loop().create_task(self._read())
        hello = await self.call(
            "connect",
            {
                "minProtocol": 4,
                "maxProtocol": 4,
                "client": {
                    "id": "cli",
                    "version": "bench-agent",
                    "platform": "linux",
                    "mode": "cli",
                    "instanceId": str(uuid.uuid4()),
                },
                "caps": [],
                "auth": {"token": TOKEN},
                "role": "operator",
                "scopes": ["operator.read", "operator.write", "operator.admin"],
            },
        )
        assert hello["type"] == "hello-ok", hello

    async def _read(self) -> None:
        assert self.ws is not None
        loads = json.loads
        async for msg in self.ws:
            received = time.perf_counter()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data: str = msg.data
            if '"stream":"assistant"' in data:
                if self.on_delta is not None:
                    self.on_delta(received, data)
                continue
            if '"type":"res"' in data:
                frame = loads(data)
                future = self._responses.pop(frame["id"], None)
                if future is not None and not future.done():
                    future.set_result(frame)
            elif '"event":"chat"' in data and '"state":"delta"' not in data:
                payload = loads(data)["payload"]
                future = self._finals.pop(payload["runId"], None)
                if future is not None and not future.done():
                    future.set_result(payload)

    async def call(self, method: str, params: Any) -> Any:
        assert self.ws is not None
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[request_id] = future
        await self.ws.send_str(
            json.dumps({"type": "req", "id": request_id, "method": method, "params": params})
        )
        frame = await asyncio.wait_for(future, STEP_S)
        if not frame["ok"]:
            raise RuntimeError(f"{method}: {frame['error']}")
        return frame["payload"]

    async def turn(self, session: str, message: str) -> dict[str, Any]:
        """One chat turn, to its final event."""
        run_id = uuid.uuid4().hex
        final: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._finals[run_id] = final
        await self.call(
            "chat.send", {"sessionKey": session, "message": message, "idempotencyKey": run_id}
        )
        payload = await asyncio.wait_for(final, STEP_S)
        if payload["state"] != "final":
            raise RuntimeError(f"turn ended {payload['state']}: {payload}")
        return payload

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await asyncio.wait_for(self._reader, 5)


# ------------------------------------------------------------------------------ latency


class Stamps:
    """Receive - send of every stamped delta a client saw."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.latencies_ms: list[float] = []
        self.first_sent = 0.0
        self.last_received = 0.0

    def __call__(self, received: float, data: str) -> None:
        found = STAMP.search(data)
        if found is None:
            return
        sent = float(found.group(1))
        if not self.latencies_ms:
            self.first_sent = sent
        self.latencies_ms.append((received - sent) * 1000)
        self.last_received = received
        self.plan.acked.set()

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = summary(self.latencies_ms)
        out["sent"] = self.plan.sent
        span = self.last_received - self.first_sent
        if span > 0:
            out["deltas_per_s"] = round(len(self.latencies_ms) / span)
        return out


async def gateway_latency(
    kind: str, fake: FakeProvider, deltas: int, interval_ms: float, profile: Path | None
) -> dict[str, Any]:
    gateway = await start_gateway(kind, fake, profile)
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            client = Client(http, gateway.url)
            await client.connect()
            fake.plan = Plan("lockstep", 200)
            client.on_delta = Stamps(fake.plan)
            await client.turn("bench-warmup", "warm up")  # loads the SDK, fills caches
            for mode in ("lockstep", "paced", "burst"):
                fake.plan = Plan(mode, deltas, interval_ms / 1000)
                stamps = Stamps(fake.plan)
                client.on_delta = stamps
                cpu, began = gateway.cpu_s(), time.perf_counter()
                await client.turn(f"bench-latency-{mode}", f"stream {deltas} deltas")
                wall = time.perf_counter() - began
                out[mode] = stamps.result()
                # Over the whole turn (request, stream, transcript writes).
                out[mode]["gateway_cpu_pct"] = round(100 * (gateway.cpu_s() - cpu) / wall)
            await client.close()
    finally:
        await gateway.stop()
        shutil.rmtree(gateway.home, ignore_errors=True)
    return out


async def direct_latency(kind: str, fake: FakeProvider, plan: Plan) -> dict[str, Any]:
    """The client reads the fake's SSE stream itself."""
    fake.plan = plan
    stamps = Stamps(plan)
    path = "/v1/messages" if kind == "anthropic" else "/v1/chat/completions"
    body = {"model": MODEL, "stream": True, "messages": []}
    async with aiohttp.ClientSession() as http, http.post(fake.url + path, json=body) as res:
        async for line in res.content:
            received = time.perf_counter()
            if line.startswith(b"data:") and b"<t=" in line:
                stamps(received, line.decode())
    return stamps.result()


async def relay_latency(
    kind: str, fake: FakeProvider, plans: Sequence[Plan]
) -> list[dict[str, Any]]:
    """Through the minimal relay process, one stream per plan."""
    relay = await start_relay(kind, fake)
    out = []
    try:
        async with aiohttp.ClientSession() as http:
            for plan in plans:
                fake.plan = plan
                stamps = Stamps(plan)
                async with http.ws_connect(relay.url + "/ws") as ws:
                    await ws.send_str("go")
                    async for msg in ws:
                        received = time.perf_counter()
                        if msg.type != aiohttp.WSMsgType.TEXT or msg.data == "end":
                            break
                        stamps(received, msg.data)
                out.append(stamps.result())
    finally:
        await relay.stop()
    return out


def relay_main(port: int, kind: str, upstream: str) -> None:
    """`--relay`: SSE from `upstream` in, one WebSocket text frame per delta out."""
    path = "/v1/messages" if kind == "anthropic" else "/v1/chat/completions"

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        body = {"model": MODEL, "stream": True, "messages": []}
        async with (
            aiohttp.ClientSession() as http,
            http.post(upstream + path, json=body) as res,
        ):
            async for line in res.content:
                if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
                    continue
                event = json.loads(line[5:])
                if kind == "anthropic":
                    text = (event.get("delta") or {}).get("text")
                else:
                    choices = event.get("choices") if isinstance(event, dict) else None
                    text = (choices[0].get("delta") or {}).get("content") if choices else None
                if text:
                    await ws.send_str(json.dumps({"delta": text}))
        await ws.send_str("end")
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/readyz", ready)
    app.router.add_get("/ws", relay)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_loop())


# ------------------------------------------------------------------------------ turns


async def turns(
    kind: str, fake: FakeProvider, args: argparse.Namespace, *, profile: Path | None
) -> dict[str, Any]:
    sequential, sessions, each = args.turns, args.sessions, args.turns_each
    fake.plan = Plan("instant")
    gateway = await start_gateway(kind, fake, profile)
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            client = Client(http, gateway.url)
            await client.connect()
            for i in range(5):
                await client.turn("bench-warmup", f"warm up {i}")

            async def timed(session: str, message: str) -> float:
                began = time.perf_counter()
                await client.turn(session, message)
                return (time.perf_counter() - began) * 1000

            cpu, began = gateway.cpu_s(), time.perf_counter()
            latencies = [await timed("bench-seq", f"[instant] turn {i}") for i in range(sequential)]
            elapsed = time.perf_counter() - began
            quarter = max(1, sequential // 4)
            out["sequential"] = {
                "turns": sequential,
                "turns_per_s": round(sequential / elapsed, 1),
                "first_quarter_per_s": round(1000 * quarter / sum(latencies[:quarter]), 1),
                "last_quarter_per_s": round(1000 * quarter / sum(latencies[-quarter:]), 1),
                "latency_ms": summary(latencies),
                "gateway_cpu_pct": round(100 * (gateway.cpu_s() - cpu) / elapsed),
            }

            async def session_turns(s: int) -> list[float]:
                return [await timed(f"bench-conc-{s}", f"[instant] turn {i}") for i in range(each)]

            cpu, began = gateway.cpu_s(), time.perf_counter()
            results = await asyncio.gather(*(session_turns(s) for s in range(sessions)))
            elapsed = time.perf_counter() - began
            flat = [x for r in results for x in r]
            out["concurrent"] = {
                "sessions": sessions,
                "turns": len(flat),
                "turns_per_s": round(len(flat) / elapsed, 1),
                "latency_ms": summary(flat),
                "gateway_cpu_pct": round(100 * (gateway.cpu_s() - cpu) / elapsed),
            }
            out["interference"] = await interference(client, fake, args)
            await client.close()
    finally:
        await gateway.stop()
        shutil.rmtree(gateway.home, ignore_errors=True)
    return out


async def interference(
    client: Client, fake: FakeProvider, args: argparse.Namespace
) -> dict[str, Any]:
    """A paced stream on a new session while turns keep starting on the long one."""
    history = await client.call("chat.history", {"sessionKey": "bench-seq", "limit": 1000})
    fake.plan = Plan("paced", args.deltas, args.interval_ms / 1000)
    stamps = Stamps(fake.plan)
    client.on_delta = stamps
    stop = asyncio.Event()

    async def background() -> int:
        count = 0
        while not stop.is_set():
            await client.turn("bench-seq", f"[instant] meanwhile {count}")
            count += 1
        return count

    task = asyncio.get_running_loop().create_task(background())
    try:
        await client.turn("bench-interference", f"stream {args.deltas} deltas")
    finally:
        stop.set()
        background_turns = await asyncio.wait_for(task, STEP_S)
    out = stamps.result()
    out["background_turns"] = background_turns
    out["background_session_messages"] = len(history["messages"])
    return out


# ------------------------------------------------------------------------------ main


def profile_path(name: str) -> Path:
    """Where the gateway's cProfile output goes (outside the repository)."""
    return Path(tempfile.gettempdir()) / f"moltis-bench-agent-{name}.prof"


def print_profile(path: Path, top: int = 25) -> None:
    """The gateway's top functions, by own time and by cumulative time in our code."""
    import pstats

    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"moltis_desktop/(agent|providers|sessions)", top)
    print(f"(full profile: {path})")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeProvider()
    await fake.start()
    results: dict[str, Any] = {"machine": machine(), "pinned": pin(BENCH_CPU)}
    results["settings"] = {
        "deltas": args.deltas,
        "interval_ms": args.interval_ms,
        "sequential_turns": args.turns,
        "sessions": args.sessions,
        "turns_per_session": args.turns_each,
    }
    try:
        for kind in args.kinds.split(","):
            profile = profile_path(f"latency-{kind}") if args.profile else None
            entry: dict[str, Any] = await gateway_latency(
                kind, fake, args.deltas, args.interval_ms, profile
            )
            interval = args.interval_ms / 1000
            for mode in ("lockstep", "paced"):
                plan = Plan(mode, args.deltas, interval)
                entry[f"direct-{mode}"] = await direct_latency(kind, fake, plan)
            entry["relay-lockstep"], entry["relay-paced"] = await relay_latency(
                kind,
                fake,
                [Plan("lockstep", args.deltas, interval), Plan("paced", args.deltas, interval)],
            )
            entry["added_ms"] = {
                f"{mode}-{stat}-vs-{base}": round(
                    entry[mode][stat] - entry[f"{base}-{mode}"][stat], 3
                )
                for mode in ("lockstep", "paced")
                for stat in ("p50", "p99")
                for base in ("direct", "relay")
            }
            results[kind] = entry
            if profile is not None:
                print_profile(profile)
        results["turns"] = {}
        for kind in args.kinds.split(","):
            profile = profile_path(f"turns-{kind}") if args.profile else None
            results["turns"][kind] = await turns(kind, fake, args, profile=profile)
            if profile is not None:
                print_profile(profile)
    finally:
        await fake.close()
    return results


def report(results: dict[str, Any], kinds: Sequence[str]) -> None:
    print(f"\nMachine: {results['machine']}, pinned: {results['pinned']}")
    print(
        f"\n{'delta latency (ms)':34} {'n':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8}", end=""
    )
    print(f" {'deltas/s':>9} {'gw cpu':>7}  verdict")
    for kind in kinds:
        for mode in (
            "lockstep",
            "paced",
            "burst",
            "relay-lockstep",
            "relay-paced",
            "direct-lockstep",
            "direct-paced",
        ):
            r = results[kind][mode]
            label = {
                "lockstep": "gateway, lockstep",
                "paced": "gateway, paced",
                "burst": "gateway, burst",
                "relay-lockstep": "relay, lockstep",
                "relay-paced": "relay, paced",
                "direct-lockstep": "direct, lockstep",
                "direct-paced": "direct, paced",
            }[mode]
            verdict = ""
            if mode in ("lockstep", "paced"):
                verdict = "ok" if r["p99"] <= TARGET_P99_MS else "MISSED"
            elif mode == "burst":
                verdict = "ok" if r["p99"] <= TARGET_P99_MS else "MISSED (queueing)"
            cpu = f"{r['gateway_cpu_pct']}%" if "gateway_cpu_pct" in r else ""
            print(
                f"{kind + ' ' + label:34} {r['n']:>5} {r['p50']:>7.3f} {r['p90']:>7.3f} "
                f"{r['p99']:>7.3f} {r['max']:>8.3f} {r.get('deltas_per_s', ''):>9} {cpu:>7}"
                f"  {verdict}"
            )
    print(
        f"\n{'turns (instant provider)':34} {'turns/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'gw cpu':>7}  {'turns/s, first / last quarter':>30}"
    )
    for kind in kinds:
        seq, conc = results["turns"][kind]["sequential"], results["turns"][kind]["concurrent"]
        print(
            f"{kind + ' sequential, 1 session':34} {seq['turns_per_s']:>8} "
            f"{seq['latency_ms']['p50']:>8} {seq['latency_ms']['p99']:>8} "
            f"{seq['gateway_cpu_pct']:>6}%  "
            f"{str(seq['first_quarter_per_s']) + ' / ' + str(seq['last_quarter_per_s']):>30}"
        )
        print(
            f"{kind + ' concurrent, ' + str(conc['sessions']) + ' sessions':34} "
            f"{conc['turns_per_s']:>8} {conc['latency_ms']['p50']:>8} "
            f"{conc['latency_ms']['p99']:>8} {conc['gateway_cpu_pct']:>6}%"
        )
    print(
        f"\n{'paced stream while the long session':34} {'n':>5} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'max':>8}  background turns"
    )
    for kind in kinds:
        r = results["turns"][kind]["interference"]
        print(
            f"{kind + ' delta latency (ms)':34} {r['n']:>5} {r['p50']:>7.3f} {r['p90']:>7.3f} "
            f"{r['p99']:>7.3f} {r['max']:>8.3f}  {r['background_turns']} on "
            f"{r['background_session_messages']} messages"
        )


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where available (as the gateway runs), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer deltas and turns")
    parser.add_argument("--kinds", default="openai,anthropic", help="wire APIs to measure")
    parser.add_argument("--deltas", type=int, default=2000, help="deltas per latency run")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="pace of `paced`")
    parser.add_argument("--turns", type=int, default=300, help="sequential turns")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions")
    parser.add_argument("--turns-each", type=int, default=40, help="turns per session")
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway")
    parser.add_argument(
        "--relay", nargs=3, metavar=("PORT", "KIND", "UPSTREAM"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.relay:
        relay_main(int(args.relay[0]), args.relay[1], args.relay[2])
        return 0
    if args.quick:
        args.deltas, args.turns, args.turns_each = 500, 100, 15
    loop = new_loop()
    try:
        results = loop.run_until_complete(run(args))
    finally:
        loop.close()
    report(results, args.kinds.split(","))
    print("\n" + json.dumps(results, indent=2))
    save_results("agent-", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
