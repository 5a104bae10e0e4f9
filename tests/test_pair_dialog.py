"""The tray's Pair a Phone window, offscreen, on the real gateway: the QR code read back by a
real decoder (zxing-cpp), the countdown, regenerating, a loopback-only gateway opened to the
network, pairing requests answered inline, and closing itself once the phone is paired."""

from __future__ import annotations

import asyncio
import os
import re
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

import zxingcpp
from PIL import Image
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from moltis_desktop.core.clock import ManualClock
from moltis_desktop.desktop.pair_dialog import LAN_DISABLED_TEXT, NO_AUTH_TEXT, PairDialog
from moltis_desktop.desktop.qr import QR_MIN_PX, faded, qr_image, qr_matrix
from moltis_desktop.pairing.setupcode import SetupCode, decode, encode
from moltis_desktop.protocol.constants import Scope
from tests.support.browser import OUTPUT, widget_shot
from tests.test_desktop import TOKEN, make_runtime, qt_run, running_app

pytestmark = pytest.mark.xdist_group("qt")
SHOTS = OUTPUT / "desktop"
COUNTDOWN = re.compile(r"^Expires in (\d+):(\d\d)$")
LAN = '[providers.ollama]\n[gateway]\nbind = "lan"\nauto_approve_loopback_devices = false\n'


def read_qr(path: Path) -> list[str]:
    """The texts of the QR codes a real decoder finds in a PNG file."""
    with Image.open(path) as image:
        return [r.text for r in zxingcpp.read_barcodes(image.convert("L"))]


def save(image: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    assert image.save(str(path)), f"could not save {path}"
    return path


def seconds_left(dialog: PairDialog) -> int:
    match = COUNTDOWN.match(dialog.countdown_text())
    assert match, dialog.countdown_text()
    return int(match[1]) * 60 + int(match[2])


async def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def assert_laid_out(dialog: PairDialog) -> None:
    """Nothing on top of the QR code; the window holds all its content."""
    assert dialog.countdown.geometry().top() > dialog.qr.geometry().bottom()
    assert dialog.height() >= dialog.heightForWidth(dialog.width())
    assert dialog.height() >= dialog.minimumSizeHint().height()


def dark_palette() -> QPalette:
    palette = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#1f2125",
        QPalette.ColorRole.WindowText: "#e8e8e8",
        QPalette.ColorRole.Base: "#15171a",
        QPalette.ColorRole.AlternateBase: "#26292e",
        QPalette.ColorRole.Text: "#e8e8e8",
        QPalette.ColorRole.Button: "#2c2f35",
        QPalette.ColorRole.ButtonText: "#e8e8e8",
        QPalette.ColorRole.Highlight: "#3b82f6",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.PlaceholderText: "#9aa0a6",
        QPalette.ColorRole.ToolTipBase: "#2c2f35",
        QPalette.ColorRole.ToolTipText: "#e8e8e8",
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7075"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#6b7075"))
    return palette


def test_qr_image_is_crisp_and_a_real_reader_gets_the_setup_code_back(qapp: QApplication) -> None:
    code = encode(
        SetupCode(
            url="ws://192.168.1.20:18789",
            urls=("ws://192.168.1.20:18789", "ws://10.0.0.7:18789"),
            bootstrap_token="b" * 43,
        )
    )
    modules = len(qr_matrix(code))
    image = qr_image(code)
    assert image.width() == image.height() >= QR_MIN_PX
    assert image.width() % modules == 0  # whole pixels per module
    scale = image.width() // modules
    assert (scale - 1) * modules < QR_MIN_PX  # and no bigger than needed
    # Nothing but black and white: no smoothing at module edges.
    greys = {image.pixelColor(x, y).lightness() for x in range(0, 60) for y in range(0, 60)}
    assert greys <= {0, 255}
    # The quiet zone (4 modules) is white all round.
    assert all(image.pixelColor(x, 4 * scale - 1).lightness() == 255 for x in range(image.width()))
    assert read_qr(save(image, "pair-qr")) == [code]
    assert read_qr(save(qr_image(code, 2), "pair-qr-small")) == [code]
    # An expired code is washed out: it cannot be scanned any more.
    assert read_qr(save(faded(image, "Expired"), "pair-qr-expired")) == []


def test_the_tray_shows_a_scannable_code_that_counts_down_and_regenerates(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def body() -> None:
        runtime = make_runtime(tmp_path / "home", LAN)
        async with running_app(qapp, runtime) as app:
            gw = app.gateway_state
            assert gw is not None
            app.action("Pair a Phone…").trigger()
            dialog = app._pair_dialog
            assert dialog is not None and dialog.isVisible()
            assert dialog.windowTitle() == "Pair a Phone"
            assert dialog.state == "code", dialog.error_text.text()
            code = dialog.code_text()
            result = dialog.setup_result
            assert result["setupCode"] == code and dialog.code_field.text() == code
            assert decode(code).url == result["gatewayUrl"]
            assert result["gatewayUrl"] in dialog.address.text()
            assert dialog.timer.isActive()
            assert dialog.focusWidget() is dialog.copy_button  # Space copies the code

            # A real decoder reads the code, from the QR alone and from the whole window.
            assert read_qr(save(dialog.qr_pixmap(), "pair-dialog-qr")) == [code]
            assert read_qr(widget_shot(dialog, "pair-dialog")) == [code]
            assert dialog.qr.width() >= QR_MIN_PX
            assert_laid_out(dialog)

            # The countdown starts at ten minutes and goes down as time passes.
            assert 9 * 60 < seconds_left(dialog) <= 10 * 60
            clock = ManualClock(start_ms=gw.clock.now_ms())
            dialog.clock = clock
            dialog.tick()
            before = seconds_left(dialog)
            clock.advance(61)
            await wait_for(lambda: seconds_left(dialog) <= before - 61, 3)  # the 1 s timer
            assert COUNTDOWN.match(dialog.countdown_text())

            # Copy puts the code on the clipboard.
            dialog.copy_button.click()
            assert QGuiApplication.clipboard().text() == code

            # Regenerate: a different code (and setup), scannable too.
            dialog.clock = gw.clock
            dialog.regenerate_button.click()
            assert dialog.state == "code"
            assert (
                dialog.code_text() != code and dialog.setup_result["setupId"] != result["setupId"]
            )
            code = dialog.code_text()
            assert read_qr(save(dialog.qr_pixmap(), "pair-dialog-qr-2")) == [code]

            # The profile is part of the code: choosing one makes a new code.
            dialog.profile.setCurrentIndex(dialog.profile.findData("voice-node"))
            assert dialog.state == "code" and dialog.code_text() != code
            assert dialog.setup_result["access"] in ("voice-node", "limited")
            dialog.profile.setCurrentIndex(dialog.profile.findData("full"))
            code = dialog.code_text()

            # Dark palette: still readable, the QR still on white and scannable.
            dialog.setPalette(dark_palette())
            assert read_qr(widget_shot(dialog, "pair-dialog-dark")) == [code]
            dialog.setPalette(QPalette())

            # Once it expires it says so, and the washed-out QR can no longer be scanned;
            # Regenerate (now the default button) makes a new one.
            clock = ManualClock(start_ms=gw.clock.now_ms())
            dialog.clock = clock
            clock.advance(10 * 60 + 1)
            await wait_for(lambda: dialog.state == "expired", 3)
            assert "expired" in dialog.countdown_text()
            assert dialog.code_text() == "" and dialog.code_field.text() == ""
            assert dialog.setup_result["setupCode"] == code
            assert not dialog.copy_button.isEnabled()
            assert dialog.regenerate_button.isDefault()
            assert read_qr(widget_shot(dialog, "pair-dialog-expired")) == []
            dialog.clock = gw.clock
            dialog.regenerate_button.click()
            assert dialog.state == "code" and dialog.code_text() != code
            assert dialog.copy_button.isEnabled()

            # One window: the tray raises it (same code); closed, its timer stops; opened
            # again, it has a fresh code.
            code = dialog.code_text()
            assert app.open_pair_dialog() is dialog and dialog.code_text() == code
            dialog.close()
            assert not dialog.timer.isActive()
            app.action("Pair a Phone…").trigger()
            assert app._pair_dialog is dialog and dialog.isVisible()
            assert dialog.timer.isActive() and dialog.code_text() not in ("", code)

            # A code that cannot be made says why, and Regenerate tries again.
            dialog.public_url = "ws://8.8.8.8:18789"  # plain ws:// may not leave the network
            dialog.regenerate_button.click()
            assert dialog.state == "error" and dialog.code_text() == ""
            assert "wss://" in dialog.error_text.text()
            widget_shot(dialog, "pair-dialog-error")
            dialog.public_url = None
            dialog.regenerate_button.click()
            assert dialog.state == "code"

            dialog.reject()  # Esc
            assert not dialog.isVisible() and not dialog.timer.isActive()

    qt_run(qapp, body())


async def phone_with_code(http: Any, url: str, key: Any, bootstrap: str) -> dict[str, Any]:
    """Connect as a phone that scanned a setup code (a signed device + its bootstrap token),
    as OpenClaw's apps do; returns the `connect` answer."""
    from tests.support.schema import FrameValidator
    from tests.support.wsclient import ProtoClient

    client = ProtoClient(http, url, FrameValidator())
    try:
        return await client.connect_signed(
            key, secret=bootstrap,
            role="node", scopes=[], client_id="node-host", mode="node",
            client={"displayName": "Ada's Pixel"}, auth={"bootstrapToken": bootstrap},
        )  # fmt: skip
    finally:
        await client.close()


def test_requests_are_answered_inline_and_the_window_closes_once_the_phone_is_paired(
    qapp: QApplication, tmp_path: Path
) -> None:
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.support.schema import FrameValidator
    from tests.support.wsclient import ProtoClient

    async def body() -> None:
        runtime = make_runtime(tmp_path / "home", LAN)
        async with running_app(qapp, runtime) as app:
            gw = app.gateway_state
            assert gw is not None
            laptop, phone = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
            dialog = app.open_pair_dialog()
            assert dialog.state == "code"
            async with aiohttp.ClientSession() as http:

                async def laptop_connect() -> dict[str, Any]:
                    client = ProtoClient(http, gw.url, FrameValidator())
                    res = await client.connect_signed(
                        laptop, secret=TOKEN, token=TOKEN, scopes=["operator.read"]
                    )
                    await client.close()
                    return res

                # Another device asks to pair: the window shows it with Approve / Reject
                # (and the tray still notifies). Approving it does not end the window.
                assert (await laptop_connect())["error"]["code"] == "NOT_PAIRED"
                assert app.state == "attention"
                [row] = dialog.rows.values()
                assert row.name == "cli" and "wants to pair" in row.text.text()
                assert dialog.requests_box.isVisible()
                row.approve.click()
                assert not dialog.rows and dialog.state == "code"
                assert "can connect now" in dialog.request_status.text()
                assert app.state == "idle"
                assert (await laptop_connect())["ok"]

                # Another window's code completing is not this one's.
                gw.events.broadcast(
                    "device.pair.setup.completed",
                    {"setupId": "someone-else", "deviceId": "ab" * 32, "access": "full", "ts": 1},
                    scope=Scope.PAIRING,
                )
                assert dialog.state == "code"

                # The phone scans the window (a real decoder reads the QR code off it) and
                # connects to the address in the code with its bootstrap token; it waits
                # for approval, which is given in the window.
                [scanned] = read_qr(widget_shot(dialog, "pair-dialog-before-scan"))
                code = decode(scanned)
                res = await phone_with_code(http, code.url, phone, code.bootstrap_token)
                assert res["error"]["code"] == "NOT_PAIRED", res
                [row] = dialog.rows.values()
                assert row.name == "Ada's Pixel"
                # Reachable from the keyboard: Tab goes from the code to Approve, Reject.
                assert dialog.copy_button.nextInFocusChain() is row.approve
                assert row.approve.nextInFocusChain() is row.reject
                widget_shot(dialog, "pair-dialog-request")
                assert_laid_out(dialog)
                row.approve.click()
                assert dialog.state == "paired"
                assert "Ada's Pixel is paired" in dialog.done_text.text()
                assert "✓" in dialog.done_text.text()
                assert not dialog.requests_box.isVisible()
                widget_shot(dialog, "pair-dialog-paired")
                started = time.monotonic()
                # The phone connects again and gets its tokens; the window closes itself.
                res = await phone_with_code(http, code.url, phone, code.bootstrap_token)
                assert res["ok"], res
                assert {t["role"] for t in res["payload"]["auth"]["deviceTokens"]} >= {"node"}
                await wait_for(lambda: not dialog.isVisible(), 5)
                assert time.monotonic() - started >= 1.5
                assert not dialog.timer.isActive()

    qt_run(qapp, body())


def test_a_phone_approved_silently_closes_the_window_when_it_has_its_tokens(
    qapp: QApplication, tmp_path: Path
) -> None:
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    async def body() -> None:
        # A device on this machine is paired without asking (the default): the window
        # learns of it from `device.pair.setup.completed`.
        runtime = make_runtime(tmp_path / "home", '[gateway]\nbind = "lan"\n')
        async with running_app(qapp, runtime) as app:
            gw = app.gateway_state
            assert gw is not None
            dialog = app.open_pair_dialog()
            code = decode(dialog.code_text())
            async with aiohttp.ClientSession() as http:
                key = Ed25519PrivateKey.generate()
                res = await phone_with_code(http, gw.url, key, code.bootstrap_token)
            assert res["ok"], res
            assert dialog.state == "paired" and not dialog.rows
            assert "Ada's Pixel is paired" in dialog.done_text.text()
            await wait_for(lambda: not dialog.isVisible(), 5)

    qt_run(qapp, body())


def test_a_loopback_only_gateway_is_opened_to_the_network_from_the_window(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def body() -> None:
        runtime = make_runtime(tmp_path / "home", "[providers.ollama]\n")
        async with running_app(qapp, runtime) as app:
            gw = app.gateway_state
            assert gw is not None and gw.host == "127.0.0.1"
            dialog = app.open_pair_dialog()
            assert dialog.state == "lan-disabled"
            assert dialog.code_text() == "" and dialog.page is dialog.lan_page
            assert LAN_DISABLED_TEXT in dialog.lan_heading.text()
            assert "Sign-in stays on" in dialog.lan_text.text()
            assert dialog.allow_button.isEnabled() and dialog.allow_button.isDefault()
            assert not dialog.regenerate_button.isVisible()
            widget_shot(dialog, "pair-dialog-lan-disabled")
            dialog.setPalette(dark_palette())
            widget_shot(dialog, "pair-dialog-lan-disabled-dark")
            dialog.setPalette(QPalette())

            dialog.allow_button.click()
            saved = tomllib.loads(runtime.paths.config_file.read_text(encoding="utf-8"))
            assert saved["gateway"]["bind"] == "lan"
            assert "ollama" in saved["providers"]  # the rest of the file is kept
            await wait_for(lambda: dialog.state == "code", 15)
            assert gw.host == "0.0.0.0"  # moved onto the network by itself
            code = dialog.code_text()
            assert read_qr(widget_shot(dialog, "pair-dialog-after-lan")) == [code]
            assert "127.0.0.1" not in decode(code).url

    qt_run(qapp, body())


def test_the_network_stays_closed_while_sign_in_is_off(qapp: QApplication, tmp_path: Path) -> None:
    async def body() -> None:
        runtime = make_runtime(tmp_path / "home", '[gateway.auth]\nmode = "none"\n')
        async with running_app(qapp, runtime) as app:
            before = runtime.paths.config_file.read_text(encoding="utf-8")
            dialog = app.open_pair_dialog()
            assert dialog.state == "lan-disabled"
            assert not dialog.allow_button.isEnabled()
            assert dialog.lan_status.isVisible()
            assert "Sign-in is turned off" in dialog.lan_status.text()
            widget_shot(dialog, "pair-dialog-no-auth")
            assert dialog.allow_on_network() is False
            assert NO_AUTH_TEXT.split(",")[0] in dialog.lan_status.text()
            assert runtime.paths.config_file.read_text(encoding="utf-8") == before

    qt_run(qapp, body())
