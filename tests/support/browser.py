"""Headless Chromium (Debian's, driven by Playwright) against a real gateway's web app.

Screenshots go to the test output folder (`MOLTIS_TEST_OUTPUT`, default `test-output/` at
the repository root, not committed) with a gallery page, `webui/index.html`, linking them.
"""

from __future__ import annotations

import html
import os
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from filelock import FileLock
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("MOLTIS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EVERY_LOOK = pytest.mark.parametrize(
    ("theme", "size", "viewport"),
    [
        ("light", "desktop", DESKTOP),
        ("dark", "desktop", DESKTOP),
        ("light", "phone", PHONE),
        ("dark", "phone", PHONE),
    ],
)
"""Light and dark themes at desktop and phone sizes: the screenshot and axe tests' matrix."""
OUTPUT = Path(os.environ.get("MOLTIS_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
SHOTS = OUTPUT / "webui"


class Chromium:
    """One browser for a test; pages are opened signed in to a gateway."""

    def __init__(self, extra_args: list[str] | None = None) -> None:
        self._pw: Any = None
        self.browser: Browser | None = None
        self.extra_args = list(extra_args or [])
        """More command-line flags (e.g. a fake microphone)."""

    async def __aenter__(self) -> Chromium:
        self._pw = await async_playwright().start()
        self.browser = await self._pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *self.extra_args]
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.browser is not None:
            await self.browser.close()
        await self._pw.stop()

    async def page(
        self, *, viewport: dict[str, int] = DESKTOP, color_scheme: str = "light", **kw: Any
    ) -> Page:
        assert self.browser is not None
        context = await self.browser.new_context(
            viewport=viewport,
            color_scheme=color_scheme,
            **kw,  # type: ignore[arg-type]
        )
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        return page


async def ticket_url(http: str, token: str) -> str:
    """A one-time sign-in link, as the desktop app and `moltis dashboard` get them."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{http}/ui/ticket", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["url"])


async def wait_ready(page: Page, timeout: float = 15_000) -> None:
    """Until the chat is usable: JS loaded, connected, history shown."""
    await page.wait_for_selector("html[data-ready=chat]", state="attached", timeout=timeout)


async def open_signed_in(chromium: Chromium, http: str, token: str, **kw: Any) -> Page:
    page = await chromium.page(**kw)
    await page.goto(await ticket_url(http, token))
    await wait_ready(page)
    return page


def _write_gallery(folder: Path = SHOTS) -> None:
    shots = sorted(folder.glob("*.png"))
    items = "\n".join(
        f'<figure><a href="{html.escape(p.name)}"><img src="{html.escape(p.name)}" '
        f'alt="{html.escape(p.stem)}" loading="lazy"></a><figcaption>{html.escape(p.stem)}'
        "</figcaption></figure>"
        for p in shots
    )
    (folder / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>Moltis web app screenshots</title>"
        "<style>body{font:14px system-ui;margin:20px}main{display:flex;flex-wrap:wrap;gap:16px}"
        "figure{margin:0;width:320px}img{width:100%;border:1px solid #ccc}</style>"
        f"<h1>Moltis {folder.name}: {len(shots)} screenshots</h1><main>{items}</main>\n",
        encoding="utf-8",
    )


async def shot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot and list it in the gallery; returns the file."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    with FileLock(str(SHOTS / ".gallery.lock")):
        _write_gallery()
    return path


async def shot_whole(page: Page, name: str, scroller: str = ".main") -> Path:
    """A screenshot of a whole view that scrolls inside the app (`full_page` sees only the
    window then): the window is made as tall as the view for the shot, then put back."""
    size = page.viewport_size
    assert size is not None
    extra = await page.evaluate(
        "sel => { const el = document.querySelector(sel);"
        " return el ? el.scrollHeight - el.clientHeight : 0; }",
        scroller,
    )
    if extra > 0:
        await page.set_viewport_size({"width": size["width"], "height": size["height"] + extra})
    try:
        return await shot(page, name)
    finally:
        if extra > 0:
            await page.set_viewport_size(size)


_AXE = (resources.files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


async def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list:
    """axe-core's violations of the given impacts on the page as it is now. (axe is run
    through the DevTools protocol, which the page's CSP does not govern.)"""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(_AXE)
    result = await page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))})); }"
    )
    return [v for v in result if v["impact"] in impacts]


def widget_shot(widget: Any, name: str) -> Path:
    """Save a Qt widget's rendering (offscreen) under test-output/desktop/, with a gallery."""
    folder = OUTPUT / "desktop"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    with FileLock(str(folder / ".gallery.lock")):
        _write_gallery(folder)
    return path


CONTROLS = "a[href], button, input, select, textarea, summary"


async def unreachable_by_tab(
    page: Page, selectors: str = CONTROLS, *, unrendered_file_inputs: bool = False
) -> list[str]:
    """Press Tab through the page and return the visible, enabled controls (`selectors`)
    that never got the focus (their HTML, shortened). `unrendered_file_inputs` counts file
    inputs without a box (styled behind a label) as controls too."""
    rendered = (
        "(el.getClientRects().length || el.type === 'file')"
        if unrendered_file_inputs
        else ("el.getClientRects().length")
    )
    controls = (
        f"[...document.querySelectorAll({selectors!r})]"
        f".filter(el => !el.disabled && {rendered} "
        "&& getComputedStyle(el).visibility !== 'hidden')"
    )
    count = await page.evaluate(
        f"""() => {{
  window.__focused = new Set();
  document.addEventListener('focusin', e => window.__focused.add(e.target));
  document.body.focus();
  return ({controls}).length;
}}"""
    )
    for _ in range(count + 15):
        await page.keyboard.press("Tab")
    missed: list[str] = await page.evaluate(
        f"() => ({controls}).filter(el => !window.__focused.has(el))"
        ".map(el => el.outerHTML.slice(0, 90))"
    )
    return missed
