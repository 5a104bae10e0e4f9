"""Web UI benchmark: from navigation to the first usable chat, in headless Chromium.

Starts `moltis gateway` (its provider the scripted fake of tests/support/fake_llm.py, on
loopback in this process) and gives its main session some history: --messages chat turns
through `chat.send` over the WebSocket, each reply a little Markdown with a code block. Then,
for each run, it mints a one-time sign-in ticket (`POST /ui/ticket` with the token as a
bearer, what `moltis dashboard` does) and drives Chromium (the `playwright` package,
/usr/bin/chromium) to `http://127.0.0.1:<port>/#ticket=<ticket>`, until the page says it
is ready: JS loaded, connected, history rendered, i.e.

    document.documentElement.dataset.ready === "chat"
    and performance.mark("moltis:chat-ready") recorded

Per run:
  wall      page.goto() called to the ready condition seen here (includes Playwright's own
            round trips; the page watches for it with a MutationObserver and answers)
  mark      the mark's startTime: the page's own clock, from navigation start
  dcl       the navigation's domContentLoadedEventEnd, for scale
  bytes     on the wire (gzip, HTTP headers included) of the requests started before ready:
            the CDP Network domain, Network.loadingFinished encodedDataLength
  requests  how many (the ticket redeem included; the WebSocket is not)
  ws_in     WebSocket payload bytes the page received before ready (uncompressed text)

cold: every run in a new browser context (empty cache, nothing stored).
warm: the same page reloaded right after its cold run (HTTP cache warm: assets revalidate
      with their ETag and come back 304; signed in from the tab's session storage).

    .venv/bin/python bench/bench_ui.py [--runs 10] [--messages 20] [--timeout 15]

Prints a table and the JSON; writes bench/results/ui-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bench_common import free_port, machine, save_results

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_agent import TOKEN, Client, Proc, wait_ready  # noqa: E402

from tests.support.fake_llm import FakeLLM, Turn, agent_config  # noqa: E402

MOLTIS = Path(sys.executable).parent / "moltis"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY_MARK = "moltis:chat-ready"
WAIT_READY = """(name) => new Promise((resolve) => {
    const ready = () => document.documentElement.dataset.ready === "chat"
        && performance.getEntriesByName(name, "mark").length > 0;
    if (ready()) return resolve(true);
    const done = () => {
        if (!ready()) return;
        observer.disconnect();
        clearInterval(timer);
        resolve(true);
    };
    const observer = new MutationObserver(done);
    observer.observe(document.documentElement, {attributes: true, attributeFilter: ["data-ready"]});
    const timer = setInterval(done, 10);
})"""
"""Resolves once the page meets its contract (JS loaded, connected, history rendered):
`data-ready="chat"` on <html> and the `moltis:chat-ready` mark. A MutationObserver sees the
flag at once; the interval covers a mark recorded in a later task than the flag."""
TARGET_MS = 300.0
"""Navigation to the first usable chat, cold (median)."""
SETTLE_S = 0.3
"""After ready, how long the byte counts of the requests already started may still arrive."""

REPLY = """Here is what I found about **item {i}**:

1. The first point, with `inline code` and a [link](https://example.com/{i}).
2. A second point that runs a little longer, so the line wraps on a narrow window.

```python
def item_{i}(values: list[int]) -> int:
    \"\"\"Sum of the even values.\"\"\"
    return sum(v for v in values if v % 2 == 0)
```

> A quote to finish, and a table:

| key | value |
| --- | --- |
| n | {i} |
"""


# ------------------------------------------------------------------------------ stats


def summary(values: list[float]) -> dict[str, float]:
    """n, median, p90, min, max (nearest rank), rounded."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pct(p: int) -> float:
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]

    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 1),
        "p90": round(pct(90), 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


# ------------------------------------------------------------------------------ the gateway


@dataclass
class Gateway(Proc):
    """A `moltis gateway` process (bench_agent's), and the web app's origin."""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_gateway(fake: FakeLLM) -> Gateway:
    """`moltis gateway` on a free port with a fresh MOLTIS_HOME, its model served by `fake`."""
    home = Path(tempfile.mkdtemp(prefix="moltis-bench-ui-"))
    (home / "config").mkdir()
    (home / "config" / "moltis.toml").write_text(
        agent_config("openai", fake, '\n[session.reset]\nmode = "never"\n')
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTIS_")}
    env.update(MOLTIS_HOME=str(home), MOLTIS_TOKEN=TOKEN, FAKE_LLM_KEY="fake-key-0123456789")
    cmd = [str(MOLTIS), "gateway", "--port", str(port), "--log-level", "warning"]
    with (home / "gateway.out").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        await wait_ready(proc, port, agent=True)
    except BaseException:
        await Gateway(proc, port, home).stop()
        print((home / "gateway.out").read_text(errors="replace")[-2000:], file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
        raise
    return Gateway(proc, port, home)


async def fill_history(gateway: Gateway, fake: FakeLLM, messages: int) -> int:
    """`messages` chat turns on the main session; returns the messages in its history."""
    fake.script(*(Turn(text=REPLY.format(i=i), chunks=4) for i in range(messages)))
    async with aiohttp.ClientSession() as http:
        client = Client(http, gateway.url)
        await client.connect()
        try:
            for i in range(messages):
                await client.turn("main", f"Question {i}: what about item {i}?")
            history = await client.call("chat.history", {"sessionKey": "main", "limit": 1000})
        finally:
            await client.close()
    return len(history["messages"])


async def mint_ticket(http: aiohttp.ClientSession, gateway: Gateway) -> str:
    """A one-time sign-in ticket, as `moltis dashboard` gets it."""
    async with http.post(
        f"{gateway.origin}/ui/ticket", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as res:
        body = await res.json(content_type=None)
        if res.status != 200:
            raise RuntimeError(f"POST /ui/ticket answered {res.status}: {body}")
        return str(body["ticket"])


# ------------------------------------------------------------------------------ the browser


@dataclass
class Traffic:
    """What the CDP Network domain reports for one page, counted from `reset()`."""

    started: dict[str, str] = field(default_factory=dict)
    """Request id → URL, for the requests started since reset."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Request id → encoded bytes (on the wire), once finished."""
    statuses: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    ws_in: int = 0
    frozen: set[str] | None = None
    frozen_ws_in: int = 0

    def reset(self) -> None:
        self.started.clear()
        self.sizes.clear()
        self.statuses.clear()
        self.failed.clear()
        self.ws_in = 0
        self.frozen = None

    def attach(self, cdp: Any) -> None:
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.loadingFailed", self._failed)
        cdp.on("Network.webSocketFrameReceived", self._frame)

    def _sent(self, event: dict[str, Any]) -> None:
        if event["request"]["url"].startswith("http"):
            self.started.setdefault(event["requestId"], event["request"]["url"])

    def _response(self, event: dict[str, Any]) -> None:
        self.statuses[event["requestId"]] = int(event["response"]["status"])

    def _finished(self, event: dict[str, Any]) -> None:
        self.sizes[event["requestId"]] = int(event["encodedDataLength"])

    def _failed(self, event: dict[str, Any]) -> None:
        self.failed.append(self.started.get(event["requestId"], event["requestId"]))

    def _frame(self, event: dict[str, Any]) -> None:
        self.ws_in += len(event["response"]["payloadData"].encode())

    def freeze(self) -> None:
        """The page is ready: only the requests started so far count."""
        self.frozen = set(self.started)
        self.frozen_ws_in = self.ws_in

    def result(self) -> dict[str, Any]:
        ids = self.frozen if self.frozen is not None else set(self.started)
        return {
            "bytes": sum(self.sizes.get(i, 0) for i in ids),
            "requests": len(ids),
            "not_modified": sum(1 for i in ids if self.statuses.get(i) == 304),
            "unfinished": sorted(self.started[i] for i in ids if i not in self.sizes),
            "failed": list(self.failed),
            "ws_in": self.frozen_ws_in if self.frozen is not None else self.ws_in,
        }


class NotReadyError(RuntimeError):
    """The page did not meet its ready contract in time."""


async def diagnose(page: Any, errors: list[str], timeout_s: float) -> str:
    """Why the page is not ready, for the error message."""
    state: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        state = await page.evaluate(
            """(name) => ({
                ready: document.documentElement.dataset.ready ?? null,
                mark: performance.getEntriesByName(name, 'mark').length > 0,
                url: location.href.replace(/ticket=[^&]+/, 'ticket=…'),
                title: document.title,
                text: (document.body ? document.body.innerText : '').slice(0, 200),
            })""",
            READY_MARK,
        )
    lines = [
        f"the page did not report a usable chat within {timeout_s:g} s: expected "
        f'document.documentElement.dataset.ready === "chat" and '
        f'performance.mark("{READY_MARK}"), which the web app (moltis_desktop/web) sets once '
        "it is loaded, connected and the history is rendered.",
        f"  dataset.ready: {state.get('ready')!r}; mark recorded: {state.get('mark')}",
        f"  page: {state.get('url')} title {state.get('title')!r}",
        f"  text: {state.get('text', '')!r}",
    ]
    if errors:
        lines.append("  page errors: " + " | ".join(errors[:5]))
    lines.append("  (a web app without this contract never gets there: this bench needs it)")
    return "\n".join(lines)


async def wait_usable(
    page: Any, began: float, traffic: Traffic, errors: list[str], timeout_s: float
) -> dict[str, Any]:
    """Wait for the ready contract; the run's figures."""
    from playwright.async_api import Error as PlaywrightError

    deadline = began + timeout_s
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise NotReadyError(await diagnose(page, errors, timeout_s))
        try:
            await asyncio.wait_for(page.evaluate(WAIT_READY, READY_MARK), left)
            break
        except TimeoutError:
            continue
        except PlaywrightError:
            # The document went away (the page navigated or reloaded itself): wait in the
            # next one.
            await asyncio.sleep(0.01)
    wall_ms = (time.perf_counter() - began) * 1000
    traffic.freeze()
    timing = await page.evaluate(
        """(name) => {
            const mark = performance.getEntriesByName(name, 'mark')[0];
            const nav = performance.getEntriesByType('navigation')[0];
            const at = (n) => { const m = performance.getEntriesByName(n, 'mark')[0];
                                return m ? m.startTime : null; };
            return {mark: mark.startTime, dcl: nav ? nav.domContentLoadedEventEnd : null,
                    appStart: at('moltis:app-start'), auth: at('moltis:auth'),
                    hello: at('moltis:hello'), history: at('moltis:history')};
        }""",
        READY_MARK,
    )
    await asyncio.sleep(SETTLE_S)
    out: dict[str, Any] = {
        "wall_ms": round(wall_ms, 1),
        "mark_ms": round(float(timing["mark"]), 1),
        "dcl_ms": round(float(timing["dcl"]), 1) if timing["dcl"] else None,
    }
    for key in ("appStart", "auth", "hello", "history"):
        value = timing.get(key)
        out[f"{key}_ms"] = round(float(value), 1) if value is not None else None
    out.update(traffic.result())
    return out


async def one_run(
    browser: Any, http: aiohttp.ClientSession, gateway: Gateway, timeout_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cold load in a new context, then a warm reload of the same page."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        cdp = await context.new_cdp_session(page)
        traffic = Traffic()
        traffic.attach(cdp)
        await cdp.send("Network.enable")
        url = f"{gateway.origin}/#ticket={await mint_ticket(http, gateway)}"
        began = time.perf_counter()
        await page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
        cold = await wait_usable(page, began, traffic, errors, timeout_s)
        traffic.reset()
        began = time.perf_counter()
        await page.reload(wait_until="commit", timeout=timeout_s * 1000)
        warm = await wait_usable(page, began, traffic, errors, timeout_s)
        if errors:
            cold["page_errors"] = list(errors)
        return cold, warm
    finally:
        await context.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {"runs": args.runs, "messages": args.messages, "timeout_s": args.timeout},
    }
    async with FakeLLM() as fake:
        gateway = await start_gateway(fake)
        try:
            results["history_messages"] = await fill_history(gateway, fake, args.messages)
            async with async_playwright() as pw, aiohttp.ClientSession() as http:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                results["browser"] = browser.version
                try:
                    await one_run(browser, http, gateway, args.timeout)  # not counted
                    cold, warm = [], []
                    for i in range(args.runs):
                        c, w = await one_run(browser, http, gateway, args.timeout)
                        cold.append(c)
                        warm.append(w)
                        print(
                            f"run {i + 1}/{args.runs}: cold {c['wall_ms']} ms "
                            f"(mark {c['mark_ms']}), warm {w['wall_ms']} ms "
                            f"(mark {w['mark_ms']})",
                            file=sys.stderr,
                        )
                finally:
                    await browser.close()
        finally:
            await gateway.stop()
            shutil.rmtree(gateway.home, ignore_errors=True)
    for name, runs in (("cold", cold), ("warm", warm)):
        results[name] = {
            key: summary([float(r[key]) for r in runs if r[key] is not None])
            for key in (
                "wall_ms",
                "mark_ms",
                "dcl_ms",
                "appStart_ms",
                "auth_ms",
                "hello_ms",
                "history_ms",
                "bytes",
                "requests",
                "ws_in",
            )
        }
        results[name]["not_modified"] = summary([float(r["not_modified"]) for r in runs])
        results[name]["runs"] = runs
    return results


# ------------------------------------------------------------------------------ report


def report(results: dict[str, Any]) -> None:
    print(f"\nMachine: {results['machine']}, Chromium {results.get('browser')}")
    print(f"History: {results['history_messages']} messages in the main session")
    print(
        f"\n{'navigation to usable chat':30} {'n':>3} {'median':>8} {'p90':>8} {'min':>8} "
        f"{'max':>8}  target"
    )
    for name in ("cold", "warm"):
        for key, label in (
            ("wall_ms", "wall, goto to ready (ms)"),
            ("mark_ms", "chat-ready mark (ms)"),
            ("dcl_ms", "DOMContentLoaded (ms)"),
            ("appStart_ms", "  app code running (ms)"),
            ("auth_ms", "  credential ready (ms)"),
            ("hello_ms", "  hello-ok (ms)"),
            ("history_ms", "  history received (ms)"),
        ):
            s = results[name][key]
            if not s.get("n"):
                continue
            verdict = ""
            if key == "wall_ms":
                ok = s["median"] <= TARGET_MS
                verdict = f"<={TARGET_MS:g}  {'ok' if ok else 'MISSED'}"
            print(
                f"{name + ' ' + label:30} {s['n']:>3} {s['median']:>8} {s['p90']:>8} "
                f"{s['min']:>8} {s['max']:>8}  {verdict}"
            )
    print(f"\n{'transfer before ready':30} {'bytes':>9} {'requests':>9} {'304s':>5} {'ws in':>9}")
    for name in ("cold", "warm"):
        r = results[name]
        print(
            f"{name + ' (median)':30} {r['bytes']['median']:>9.0f} "
            f"{r['requests']['median']:>9.0f} {r['not_modified']['median']:>5.0f} "
            f"{r['ws_in']['median']:>9.0f}"
        )
    first = results["cold"]["runs"][0]
    if first.get("unfinished") or first.get("failed") or first.get("page_errors"):
        print(
            f"\nnote (first cold run): unfinished {first.get('unfinished')}, failed "
            f"{first.get('failed')}, page errors {first.get('page_errors')}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="cold runs, each then reloaded")
    parser.add_argument("--messages", type=int, default=20, help="chat turns of history first")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait per load")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"bench_ui: {CHROMIUM} not found (apt-get install chromium)", file=sys.stderr)
        return 1
    try:
        results = asyncio.run(run(args))
    except NotReadyError as exc:
        print(f"bench_ui: {exc}", file=sys.stderr)
        return 1
    report(results)
    brief = {
        k: {kk: vv for kk, vv in v.items() if kk != "runs"} if k in ("cold", "warm") else v
        for k, v in results.items()
    }
    print("\n" + json.dumps(brief, indent=2))
    save_results("ui-", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
