"""A scripted LLM server on a free loopback port that speaks Anthropic's Messages API and
OpenAI's Chat Completions on the wire (JSON and SSE), for tests that drive the real SDKs.

    async with FakeLLM() as fake:
        fake.script(Turn(text="hello", chunks=3),
                    Turn(tool_calls=[("current_time", {}), ("sessions_list", {"limit": 5})]),
                    Turn(error=(429, {"retry-after": "0"})),
                    Turn(text="x", thinking="because", usage=Usage(10, 5, 3, 2)),
                    Turn(text="slow", delay_s=0.05, hang=True))
        AsyncAnthropic(base_url=fake.anthropic_base_url, ...)
        AsyncOpenAI(base_url=fake.openai_base_url, ...)

Each POST to /v1/messages or /v1/chat/completions takes the next turn (an SDK retry takes
another); with the queue empty the answer is `DEFAULT_TEXT`. Every request is recorded in
`fake.requests`. The wire formats live in `tests/support/fake_wire.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from moltis_desktop.providers.base import Usage
from tests.support import fake_wire as wire
from tests.support.fake_wire import FakeModel, Turn

__all__ = ["DEFAULT_TEXT", "FakeLLM", "FakeModel", "Recorded", "Turn", "Usage"]

DEFAULT_TEXT = "ok"
_POLL_S = 0.01


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body: Any
    """The parsed JSON body (None for a GET)."""

    @property
    def api_key(self) -> str:
        """The credential the client sent (Bearer token or `x-api-key`)."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:]
        return self.headers.get("x-api-key", "")


def message_texts(body: Any, role: str = "user") -> list[str]:
    """Text of the messages of `role` a request carried (either wire format)."""
    out = []
    for message in body["messages"]:
        if message["role"] != role:
            continue
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            out.append("".join(b.get("text", "") for b in content if b.get("type") == "text"))
    return out


def system_text(body: Any) -> str:
    """The system prompt a request carried: Anthropic's `system` (a string or text blocks),
    or OpenAI's `system`/`developer` messages."""
    if "system" in body:
        system = body["system"]
        if isinstance(system, str):
            return system
        return "".join(b.get("text", "") for b in system if b.get("type") == "text")
    return "".join(message_texts(body, "system") + message_texts(body, "developer"))


class _ClientGone(Exception):
    """The client closed the connection while we were streaming to it."""


@dataclass
class FakeLLM:
    """The fake server. Use as `async with FakeLLM() as fake:`."""

    models: list[FakeModel | str] = field(
        default_factory=lambda: [FakeModel("fake-model-1"), FakeModel("fake-model-2")]
    )
    """What GET /v1/models reports (in each API's shape)."""
    models_error: int | None = None
    """When set, GET /v1/models answers this HTTP status (in the API's error shape)."""
    api_key: str | None = None
    """When set, requests that do not carry this key get a 401."""
    requests: list[Recorded] = field(default_factory=list)
    """Every request received, in order."""
    disconnects: int = 0
    """Streams the client abandoned before their end."""

    def __post_init__(self) -> None:
        self._queue: deque[Turn] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._closing = asyncio.Event()
        self._serial = 0
        self.hanging = asyncio.Event()
        """Set when a `hang=True` turn has stalled its stream."""
        self.disconnected = asyncio.Event()
        """Set when a client abandons a stream (see `disconnects`)."""

    # ------------------------------------------------------------------ scripting

    def script(self, *turns: Turn) -> FakeLLM:
        """Queue turns; each model call takes the next one."""
        self._queue.extend(turns)
        return self

    def clear(self) -> None:
        """Drop the turns not yet taken."""
        self._queue.clear()

    @property
    def pending(self) -> int:
        """Turns not yet taken."""
        return len(self._queue)

    def count(self, path: str) -> int:
        """Requests received for `path` (e.g. `/v1/messages`)."""
        return sum(1 for r in self.requests if r.path == path)

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies sent to `path`, in order."""
        return [r.body for r in self.requests if r.path == path]

    def last(self, path: str) -> Recorded:
        """The last request to `path`."""
        return [r for r in self.requests if r.path == path][-1]

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def anthropic_base_url(self) -> str:
        """For `AsyncAnthropic(base_url=...)` (the SDK appends `/v1/messages`)."""
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        """For `AsyncOpenAI(base_url=...)` (the SDK appends `/chat/completions`)."""
        return f"{self.base_url}/v1"

    async def start(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/audio/speech", self._openai_speech)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        # Hung streams wait on this, so the server's shutdown does not wait for them.
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ handlers

    async def _record(self, request: web.Request) -> Recorded:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        rec = Recorded(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.requests.append(rec)
        return rec

    def _next_turn(self) -> Turn:
        self._serial += 1
        return self._queue.popleft() if self._queue else Turn(text=DEFAULT_TEXT)

    def _unauthorised(self, rec: Recorded) -> bool:
        return self.api_key is not None and rec.api_key != self.api_key

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if self._unauthorised(rec):
            return wire.anthropic_error(401, "invalid x-api-key")
        turn = self._next_turn()
        if turn.error is not None:
            status, headers = wire.error_status(turn)
            return wire.anthropic_error(status, turn.error_message, headers, turn.error_type)
        model = turn.model or str(rec.body.get("model", ""))
        if not rec.body.get("stream"):
            await self._stall_if(turn, request)
            return web.json_response(wire.anthropic_message(turn, model, self._serial))
        return await self._stream(request, turn, wire.anthropic_events(turn, model, self._serial))

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if self._unauthorised(rec):
            return wire.openai_error(401, "Incorrect API key provided")
        turn = self._next_turn()
        if turn.error is not None:
            status, headers = wire.error_status(turn)
            return wire.openai_error(
                status, turn.error_message, headers, turn.error_type, turn.error_code
            )
        model = turn.model or str(rec.body.get("model", ""))
        if not rec.body.get("stream"):
            await self._stall_if(turn, request)
            return web.json_response(wire.openai_completion(turn, model, self._serial))
        include_usage = bool((rec.body.get("stream_options") or {}).get("include_usage"))
        events = wire.openai_chunks(turn, model, self._serial, include_usage=include_usage)
        return await self._stream(request, turn, events)

    async def _openai_speech(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's speech API: `response_format: pcm` is raw 16-bit mono 24 kHz, sent in
        pieces; here a 440 Hz tone lasting 50 ms per character of the input."""
        rec = await self._record(request)
        if self._unauthorised(rec):
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=401)
        import numpy as np

        samples = int(24000 * 0.05 * len(str(rec.body.get("input", ""))))
        tone = (np.sin(2 * np.pi * 440 * np.arange(samples) / 24000) * 8000).astype("<i2")
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await response.prepare(request)
        data = tone.tobytes()
        for i in range(0, len(data), 4801):  # odd-sized pieces: the client must re-align
            await response.write(data[i : i + 4801])
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        anthropic = "anthropic-version" in rec.headers
        if self._unauthorised(rec):
            error = wire.anthropic_error if anthropic else wire.openai_error
            return error(401, "invalid API key")
        if self.models_error is not None:
            error = wire.anthropic_error if anthropic else wire.openai_error
            return error(self.models_error, "the model list is unavailable")
        models = [m if isinstance(m, FakeModel) else FakeModel(m) for m in self.models]
        body = wire.anthropic_models(models) if anthropic else wire.openai_models(models)
        return web.json_response(body)

    # ------------------------------------------------------------------ streaming

    async def _stream(
        self,
        request: web.Request,
        turn: Turn,
        events: Sequence[wire.Event],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for event in events:
                if turn.delay_s and event.content:
                    await self._sleep(turn.delay_s, request)
                await self._write(response, request, event.encode())
                if turn.hang and event.hang_after:
                    await self._stall(request)
            await response.write_eof()
        except _ClientGone:
            if not self._closing.is_set():
                self.disconnects += 1
                self.disconnected.set()
        return response

    async def _write(self, response: web.StreamResponse, request: web.Request, data: bytes) -> None:
        if self._client_gone(request):
            raise _ClientGone
        try:
            await response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone from exc

    @staticmethod
    def _client_gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _sleep(self, seconds: float, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if self._client_gone(request):
                raise _ClientGone
            await asyncio.sleep(min(_POLL_S, max(0.0, deadline - loop.time())))

    async def _stall(self, request: web.Request) -> None:
        """Wait until the client goes away or the fake closes."""
        self.hanging.set()
        while not self._closing.is_set():
            if self._client_gone(request):
                raise _ClientGone
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _POLL_S)
        raise _ClientGone

    async def _stall_if(self, turn: Turn, request: web.Request) -> None:
        with contextlib.suppress(_ClientGone):
            if turn.delay_s:
                await self._sleep(turn.delay_s, request)
            if turn.hang:
                await self._stall(request)


def agent_config(kind: str, fake: FakeLLM, extra: str = "") -> str:
    """A moltis.toml whose default model is `fake/fake-model-1`, served by `fake` in the
    `kind` wire format (`anthropic` or `openai`); its key comes from `FAKE_LLM_KEY`."""
    base = fake.anthropic_base_url if kind == "anthropic" else fake.openai_base_url
    return f"""
[agents]
model = "fake/fake-model-1"

[providers.fake]
kind = "{kind}"
base_url = "{base}"
api_key_env = "FAKE_LLM_KEY"
max_retries = 0
{extra}
"""
