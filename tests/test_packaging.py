"""Packaging (issue 5): the app icons generated from the one SVG, Briefcase's config
(briefcase.toml) validated by Briefcase itself for every platform and format we ship, and the
PyInstaller bundle built and run for real (headless gateway, then the tray app's chat window).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.util
import json
import re
import signal
import struct
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from tests.support.process import base_env, free_port, gateway_process, wait_ready
from tests.support.schema import FrameValidator
from tests.support.wsclient import ProtoClient

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    """installer/<name>.py, loaded by path (there is a PyPI package named `installer`)."""
    spec = importlib.util.spec_from_file_location(
        f"moltis_installer_{name}", ROOT / "installer" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_icons = _script("make_icons")
briefcase_project = _script("briefcase_project")
bundle_build = _script("build")
APP = briefcase_project.APP_NAME
WEB = ROOT / "moltis_desktop" / "web"

# ---------------------------------------------------------------- icons


def png_info(data: bytes) -> tuple[int, int, dict[str, str]]:
    """Width, height and text chunks of a PNG file."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, size, texts = 8, (0, 0), {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            texts[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode(
                "utf-8"
            )
        pos += 12 + length
    return size[0], size[1], texts


def test_icons_exist_at_every_size_and_are_fresh_renders_of_the_svg() -> None:
    digest = hashlib.sha256(make_icons.SOURCE.read_bytes()).hexdigest()
    stale = []
    for size in make_icons.SIZES:
        width, height, texts = png_info(make_icons.png_path(size).read_bytes())
        assert (width, height) == (size, size)
        if texts.get(make_icons.SOURCE_KEY) != digest:
            stale.append(size)
    assert not stale, (
        f"icons {stale} were rendered from another moltis.svg: "
        "run `.venv/bin/python installer/make_icons.py`"
    )
    total = sum(p.stat().st_size for p in make_icons.ICONS.rglob("*") if p.is_file())
    assert total < 400_000  # they live in git


def test_ico_holds_the_pngs_windows_picks_from() -> None:
    data = make_icons.ICO.read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind, count) == (0, 1, len(make_icons.ICO_SIZES))
    for i, size in enumerate(make_icons.ICO_SIZES):
        entry = data[6 + 16 * i : 6 + 16 * (i + 1)]
        w, h, _colors, _res, planes, bpp, length, offset = struct.unpack("<BBBBHHII", entry)
        assert (w or 256, h or 256, planes, bpp) == (size, size, 1, 32)
        assert data[offset : offset + length] == make_icons.png_path(size).read_bytes()


def test_icns_holds_every_retina_slot() -> None:
    data = make_icons.ICNS.read_bytes()
    assert data[:4] == b"icns"
    assert struct.unpack(">I", data[4:8])[0] == len(data)
    found, pos = {}, 8
    while pos < len(data):
        ostype, length = data[pos : pos + 4], struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        found[ostype] = data[pos + 8 : pos + length]
        pos += length
    assert pos == len(data)
    for ostype, size in make_icons.ICNS_TYPES:
        assert found[ostype] == make_icons.png_path(size).read_bytes(), ostype


def test_ico_and_icns_builders_lay_out_their_tables() -> None:
    # Tiny stand-in blobs: the container layout, independent of Qt's PNG encoder.
    blobs = {size: bytes([size % 251]) * (size // 8 + 1) for size in make_icons.SIZES}
    ico = make_icons.ico_bytes(blobs, (16, 256))
    assert struct.unpack("<HHH", ico[:6]) == (0, 1, 2)
    first = struct.unpack("<BBBBHHII", ico[6:22])
    second = struct.unpack("<BBBBHHII", ico[22:38])
    assert first[0] == 16 and second[0] == 0  # 0 means 256
    assert first[7] == 38 and second[7] == 38 + len(blobs[16])
    icns = make_icons.icns_bytes(blobs, ((b"ic07", 128),))
    assert (
        icns
        == b"icns" + struct.pack(">I", 16 + 17) + b"ic07" + struct.pack(">I", 25) + (blobs[128])
    )


# ---------------------------------------------------------------- Briefcase

# The platforms and formats briefcase.toml is for (Xcode/VisualStudio: the same apps as
# projects to open in the IDE; validated too, they share the platform's config).
TARGETS = [
    ("macOS", "app"),
    ("macOS", "Xcode"),
    ("windows", "app"),
    ("windows", "VisualStudio"),
    ("linux", "appimage"),
    ("linux", "system"),
    ("linux", "flatpak"),
]
LINUX_ICON_SIZES = (16, 32, 64, 128, 256, 512)
"""The hicolor sizes Briefcase's Linux templates (system, AppImage, Flatpak) install."""


@dataclass
class Target:
    """One platform/format as Briefcase sees it, up to the point where it would fetch its
    templates from GitHub."""

    command: Any
    app: Any
    context: dict[str, Any]
    """What the format and the permissions add to the template context (Info.plist keys and
    entitlements, MSI GUID and scope, Flatpak runtime and finish-args, manylinux image...)."""


def briefcase_target(project: Path, platform: str, output_format: str) -> Target:
    """Briefcase's own config handling, offline: the `create` command's `parse_config`
    (Briefcase's `parse_config`, then GlobalConfig/DraftAppConfig), the platform's
    `finalize_app_config`, the source checks of `BaseCommand.finalize` (whose host and tool
    checks need the real platform), and the format's template context."""
    from briefcase.console import Console
    from briefcase.exceptions import BriefcaseConfigError
    from briefcase.platforms import get_output_formats

    module = get_output_formats(platform)[output_format]
    command = module.create(
        console=Console(), base_path=project, data_path=project / ".briefcase-data"
    )
    if platform == "linux" and output_format == "appimage":
        command.use_docker = True  # the portable build (the manylinux image)
        command.extra_docker_build_args = []
    if platform == "linux" and output_format == "system":
        # Package for Debian 12, whatever the host is (no Docker, no os-release reading).
        command.target_image = None
        command.platform_freedesktop_info = lambda app: {
            "ID": "debian",
            "VERSION_CODENAME": "bookworm",
            "VERSION_ID": "12",
        }
        command.target_glibc_version = lambda app: "2.36"
    command.parse_config(project / "pyproject.toml", overrides={})
    if APP not in command.apps:
        raise BriefcaseConfigError(f"no app {APP!r} in briefcase.toml")
    app = command.finalize_app_config(command.apps[APP])
    if not app.sources:
        raise BriefcaseConfigError(f"{APP!r} does not define 'sources'")
    for source in app.sources:
        if not (project / source / "__init__.py").is_file():
            raise BriefcaseConfigError(f"source {source!r} is not a package in {project}")
    context = dict(command.output_format_template_context(app))
    context.update(command.permissions_context(app, command._x_permissions(app)))
    return Target(command, app, context)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Briefcase project the installer script writes (pyproject.toml wrapping
    briefcase.toml, copies of the sources, icons and license)."""
    import briefcase  # noqa: F401 - a missing Briefcase fails here (`make install` pins it)

    project = tmp_path_factory.mktemp("briefcase")
    pyproject = briefcase_project.stage(project)
    wrapped = tomllib.loads(pyproject.read_text())
    assert wrapped == {"tool": {"briefcase": briefcase_project.load_config()}}
    return project


def expected_requires() -> list[str]:
    """pyproject's runtime dependencies and the desktop extra, with the extras it names
    (`moltis-desktop[voice]`) spelled out: a bundle cannot depend on itself."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def expand(reqs: list[str]) -> list[str]:
        out: list[str] = []
        for req in reqs:
            if req.startswith(f"{project['name']}["):
                out += expand(extras[req.split("[", 1)[1].rstrip("]")])
            else:
                out.append(req)
        return out

    return [*project["dependencies"], *expand(extras["desktop"])]


@pytest.mark.parametrize(("platform", "output_format"), TARGETS)
def test_briefcase_accepts_the_config(staged: Path, platform: str, output_format: str) -> None:
    target = briefcase_target(staged, platform, output_format)
    app = target.app
    assert target.command.global_config.bundle == "org.moltis"
    assert app.bundle_identifier == "org.moltis.moltis-desktop"
    assert app.formal_name == "Moltis Desktop"
    assert str(app.version) == "0.1.0"
    assert app.sources == ["moltis_desktop"]
    assert app.license == "MIT"
    assert app.license_files == ["LICENSE"]
    # What ships is what pyproject.toml declares: its dependencies + the desktop extra.
    assert app.requires == expected_requires()
    # The icons Briefcase will look for, by platform.
    if platform == "macOS":
        icons = [f"{app.icon}.icns"]
    elif platform == "windows":
        icons = [f"{app.icon}.ico"]
    else:
        icons = [f"{app.icon}-{size}.png" for size in LINUX_ICON_SIZES]
    missing = [icon for icon in icons if not (staged / icon).is_file()]
    assert not missing, f"{platform} {output_format}: icons missing: {missing}"


def test_macos_info_plist_asks_for_the_microphone(staged: Path) -> None:
    target = briefcase_target(staged, "macOS", "app")
    context = target.context
    assert "microphone" in context["info"]["NSMicrophoneUsageDescription"]
    # ...and the entitlement without which a signed (hardened) app never gets it.
    assert context["entitlements"]["com.apple.security.device.microphone"] is True
    assert context["info"]["LSApplicationCategoryType"].startswith("public.app-category.")
    assert target.app.packaging_format == "dmg"


def test_windows_msi_keeps_its_upgrade_code_and_installs_per_user(staged: Path) -> None:
    target = briefcase_target(staged, "windows", "app")
    context = target.context
    # The GUID Briefcase would derive, pinned so that a rename cannot break upgrades.
    assert context["guid"] == str(uuid.uuid5(uuid.NAMESPACE_DNS, "moltis-desktop.moltis.org"))
    assert context["install_scope"] == "perUser"
    assert context["version_triple"] == "0.1.0"
    assert target.app.packaging_format == "msi"


def test_linux_packages_have_what_the_tray_app_needs(staged: Path) -> None:
    deb = briefcase_target(staged, "linux", "system")
    assert deb.context["vendor_base"] == "debian"
    assert {"libxcb-cursor0", "libxkbcommon-x11-0", "libnss3"} <= set(
        deb.app.system_runtime_requires
    )
    appimage = briefcase_target(staged, "linux", "appimage")
    # PySide6 >= 6.10 wheels are manylinux_2_34: an older build image could not install them.
    assert appimage.context["manylinux_image"].startswith("manylinux_2_34_")
    flatpak = briefcase_target(staged, "linux", "flatpak")
    assert flatpak.context["flatpak_runtime"] == "org.freedesktop.Platform"
    granted = {arg for arg, on in flatpak.context["finish_args"].items() if on}
    assert {
        "socket=pulseaudio",  # the microphone
        "share=network",
        "talk-name=org.kde.StatusNotifierWatcher",  # the tray icon
        "talk-name=org.freedesktop.secrets",  # the keyring
    } <= granted


def test_the_briefcase_desktop_entry_matches_the_source_install_one() -> None:
    """Briefcase writes the Linux desktop entry from formal_name and description; the one
    installed from source (installer/moltis-desktop.desktop) says the same."""
    app = briefcase_project.load_config()["app"][APP]
    entry = dict(
        line.split("=", 1)
        for line in (ROOT / "installer" / "moltis-desktop.desktop").read_text().splitlines()
        if "=" in line
    )
    assert entry["Name"] == app["formal_name"]
    assert entry["Comment"] == app["description"]


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        table = config
        for key in keys[:-1]:
            table = table[key]
        del table[keys[-1]]

    return mutate


def _set(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        table = config
        for key in keys[:-1]:
            table = table[key]
        table[keys[-1]] = value

    return mutate


BROKEN = {
    # case: (how it is broken, the platform and format, what Briefcase says)
    "no bundle": (_drop("bundle"), "macOS", "app", "missing 'bundle'"),
    "no version": (_drop("version"), "windows", "app", "missing 'version'"),
    "bad version": (_set("zero.one", "version"), "linux", "system", "is not valid"),
    "no sources": (_drop("app", APP, "sources"), "windows", "app", "define 'sources'"),
    "sources not the app's package": (
        _set(["resources"], "app", APP, "sources"),
        "macOS",
        "app",
        "does not include a package named 'moltis_desktop'",
    ),
    "no description": (
        _drop("app", APP, "description"),
        "linux",
        "flatpak",
        "missing 'description'",
    ),
    "no license": (_drop("license"), "linux", "appimage", "no\n`license`"),
    "invalid bundle": (
        _set("org.moltis!", "bundle"),
        "linux",
        "flatpak",
        "not a valid bundle identifier",
    ),
    "no flatpak runtime": (
        _drop("app", APP, "linux", "flatpak", "flatpak_runtime"),
        "linux",
        "flatpak",
        "Flatpak runtime",
    ),
    "no app": (_set({}, "app"), "macOS", "app", "no app 'moltis-desktop'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_config_is_rejected(staged: Path, tmp_path: Path, case: str) -> None:
    """The checks above have teeth: Briefcase itself refuses these."""
    import tomli_w
    from briefcase.exceptions import BriefcaseConfigError

    mutate, platform, output_format, message = BROKEN[case]
    config = copy.deepcopy(briefcase_project.load_config())
    mutate(config)
    broken = tmp_path / "briefcase.toml"
    broken.write_text(tomli_w.dumps(config))
    project = tmp_path / "project"
    briefcase_project.stage(project, config=broken)
    with pytest.raises(BriefcaseConfigError, match=re.escape(message)):
        briefcase_target(project, platform, output_format)


# ---------------------------------------------------------------- PyInstaller bundle

BUILD_TIMEOUT = 600


@pytest.fixture(scope="module")
def bundle() -> Path:
    """dist/moltis-desktop, built by installer/build.py (reused when up to date)."""
    import PyInstaller  # noqa: F401 - a missing PyInstaller fails here (`make install` pins it)

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "installer" / "build.py")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    sys.stderr.write(f"bundle ready in {time.monotonic() - started:.0f} s: {path}\n")
    return path


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.xdist_group("bundle")
@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_bundle_runs_the_gateway_headless_and_serves_the_web_app(
    bundle: Path, tmp_path: Path
) -> None:
    exe = bundle_build.executable(bundle)
    home = tmp_path / "home"
    with gateway_process(home, token="x", command=(str(exe),), MOLTIS_HEADLESS="1") as gw:
        http = f"http://127.0.0.1:{gw.port}"
        deadline = time.monotonic() + 30
        while True:  # the agent side (plugins, providers: imported by name) loads just after
            status, _, body = _get(f"{http}/readyz")
            ready = json.loads(body)
            if status == 200 and ready.get("agent") == "ready":
                break
            assert time.monotonic() < deadline, ready
            time.sleep(0.1)
        # The web app's files are package data, read through importlib.resources.
        status, ctype, body = _get(f"{http}/")
        assert status == 200
        assert ctype.startswith("text/html")
        assert body == (WEB / "index.html").read_bytes()
        for rel in ("js/app.js", "vendor/hljs/python.mjs", "app.css"):
            status, _, body = _get(f"{http}/ui/{rel}")
            assert status == 200
            assert body == (WEB / rel).read_bytes(), rel
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(timeout=20) == 0, gw.output()
    assert "built-in plugin" not in gw.output()  # none failed to load
    log = (home / "logs" / "moltis.log").read_text()
    assert '"gateway stopped"' in log


async def _presence_modes(url: str, token: str) -> list[str]:
    async with aiohttp.ClientSession() as session:
        client = ProtoClient(session, url, FrameValidator())
        res = await client.connect(token=token)
        assert res["ok"], res
        presence = await client.call("system-presence")
        assert client.ws is not None
        await client.ws.close()
        return [entry.get("mode", "") for entry in presence]


@pytest.mark.xdist_group("bundle")
@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_bundle_tray_app_opens_the_chat_window_with_qtwebengine(
    bundle: Path, tmp_path: Path
) -> None:
    """The tray app from the bundle (offscreen): a second launch asks the first to open the
    chat window, whose QtWebEngine view loads the web app, which joins the gateway."""
    exe = str(bundle_build.executable(bundle))
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = base_env(
        home,
        HOME=str(home),
        MOLTIS_TOKEN="x",
        MOLTIS_PORT=str(port),
        QT_QPA_PLATFORM="offscreen",
        QTWEBENGINE_DISABLE_SANDBOX="1",
    )
    out = (home / "app.out").open("w")
    first = subprocess.Popen([exe], env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    out.close()
    try:
        wait_ready(port, timeout=30, proc=first)
        second = subprocess.run(
            [exe], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running" in second.stdout
        deadline = time.monotonic() + 60
        while "webchat" not in (
            modes := asyncio.run(_presence_modes(f"ws://127.0.0.1:{port}", "x"))
        ):
            assert first.poll() is None, (home / "app.out").read_text()
            assert time.monotonic() < deadline, (modes, (home / "app.out").read_text())
            time.sleep(0.5)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        try:
            code = first.wait(timeout=30)
        except subprocess.TimeoutExpired:
            first.kill()
            raise
    assert code == 0, (home / "app.out").read_text()
