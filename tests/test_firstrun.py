"""A first run with nothing to answer: no `[providers]`, no key in the environment or the
secret store, Ollama and LM Studio not running (pointed at a closed loopback port), and the
local model not downloaded. A chat gets one message that says what to do, with the buttons
to do it: over the protocol here, in Chromium in `test_webui_firstrun.py`."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

from aiohttp import web

from tests.conftest import GatewayHandle, MakeClient, StartGateway
from tests.support.schema import validator
from tests.support.wsclient import ProtoClient

LOCAL_MODEL = "qwen2.5-1.5b"
"""A catalog model (the better tier) that no test downloads for real."""
FIRST_RUN_CONFIG = f'[models.local]\nmodel = "{LOCAL_MODEL}"\n'


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def first_run_env(closed: int, **extra: str) -> dict[str, str]:
    """Nothing reachable: Ollama and LM Studio looked for on a closed port."""
    return {
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{closed}/v1",
        "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{closed}/v1",
        "MOLTIS_SECRETS_PASSPHRASE": "test-passphrase",
        **extra,
    }


async def start_first_run(start_gateway: StartGateway, **env: str) -> GatewayHandle:
    return await start_gateway(FIRST_RUN_CONFIG, env=first_run_env(closed_port(), **env))


class FakeOllama:
    """Just enough of Ollama's OpenAI-compatible API, on a loopback port: its model list
    (what the default order probes) and a one-line streamed reply."""

    def __init__(self, port: int = 0) -> None:
        self.runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> FakeOllama:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "llama3.2", "object": "model"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = (
            '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"llama3.2",'
            '"choices":[{"index":0,"delta":{"role":"assistant","content":"Paris."},'
            '"finish_reason":"stop"}]}'
        )
        await response.write(f"data: {chunk}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response


async def run_events(client: ProtoClient, run_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    """Every event frame of the run, up to and including its final/error/aborted chat event
    (each validated by the client against OpenClaw's schema as it arrives)."""
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for frame in list(client.events):
            payload = frame.get("payload") or {}
            if payload.get("runId") != run_id:
                continue
            client.events.remove(frame)
            out.append(frame)
            if frame["event"] == "chat" and payload["state"] in ("final", "error", "aborted"):
                return out
        await client.recv(max(0.1, deadline - loop.time()))


async def send(client: ProtoClient, message: str) -> str:
    run_id = str(uuid.uuid4())
    res = await client.request(
        "chat.send", {"sessionKey": "main", "message": message, "idempotencyKey": run_id}
    )
    assert res["ok"], res
    return run_id


async def test_nothing_set_up_gives_one_message_with_its_buttons(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    gw = await start_first_run(start_gateway)
    client = make_client(gw.url)
    res = await client.connect(
        token=gw.token, scopes=["operator.read", "operator.write", "operator.admin"]
    )
    assert res["ok"], res
    assert "moltis.chat.setup" in res["payload"]["features"]["events"]
    run_id = await send(client, "What is the capital of France?")
    frames = await run_events(client, run_id)
    names = [
        (f["event"], (f["payload"].get("state") or f["payload"].get("stream"))) for f in frames
    ]
    # One setup notice, then one error: no fallback, no second failure.
    setups = [f["payload"] for f in frames if f["event"] == "moltis.chat.setup"]
    errors = [f["payload"] for f in frames if f["event"] == "chat"]
    assert len(setups) == 1 and len(errors) == 1, names
    assert frames[-1]["event"] == "chat"  # the notice came first
    assert not any(
        f["event"] == "agent" and f["payload"]["data"].get("phase") == "fallback" for f in frames
    )
    error, setup = errors[0], setups[0]
    validator("ChatEvent").validate(error)  # OpenClaw's shape, no extra fields
    assert error["state"] == "error"
    assert error["errorMessage"].startswith("no model is set up yet: ")
    assert error["errorDetail"] == {"provider": "local", "providerErrorType": "setup"}
    assert setup["message"] == error["errorMessage"]
    assert setup["sessionKey"] == "agent:main:main" and setup["provider"] == "local"
    kinds = [a["kind"] for a in setup["actions"]]
    assert kinds[-2:] == ["add_key", "start_server"], setup["actions"]
    add_key = setup["actions"][-2]
    assert add_key["secret"] == "anthropic-api-key"
    assert add_key["command"] == "moltis secrets set anthropic-api-key"
    assert kinds[0] == "download_model", "the gateway's model manager offers a download"
    if "download_model" in kinds:
        download = setup["actions"][0]
        assert download["modelId"] == LOCAL_MODEL and download["bytes"] > 100_000_000
        assert f"moltis models local download {LOCAL_MODEL}" in error["errorMessage"]
    # A page opened afterwards (a reload, the tray's chat window) gets the same notice.
    later = await client.call("moltis.chat.setup.get", {"sessionKey": "main"})
    assert {k: v for k, v in later["notice"].items() if k != "ts"} == {
        k: v for k, v in setup.items() if k != "ts"
    }


async def test_started_ollama_then_try_again_answers(
    start_gateway: StartGateway, make_client: MakeClient
) -> None:
    """ "I started Ollama — try again": the turn after a setup failure looks for providers
    again, finds the server now running, and answers; the notice is gone."""
    closed = closed_port()
    gw = await start_gateway(FIRST_RUN_CONFIG, env=first_run_env(closed))
    client = make_client(gw.url)
    assert (await client.connect(token=gw.token, scopes=["operator.read", "operator.write"]))["ok"]
    frames = await run_events(client, await send(client, "hi"))
    assert frames[-1]["payload"]["state"] == "error"
    # Ollama starts where it is looked for.
    ollama = await FakeOllama(closed).start()
    try:
        frames = await run_events(client, await send(client, "hi"))
        final = frames[-1]["payload"]
        assert final["state"] == "final", final
        assert final["message"]["content"][0]["text"] == "Paris."
        assert not any(f["event"] == "moltis.chat.setup" for f in frames)
        later = await client.call("moltis.chat.setup.get", {"sessionKey": "main"})
        assert later["notice"] is None
    finally:
        await ollama.close()
