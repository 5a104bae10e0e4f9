"""A session writer killed with SIGKILL at random moments never loses or garbles a line it
had finished writing, and leaves an index and transcript that load."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moltis_desktop.sessions.store import SessionStore

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")

KEY = "agent:main:telegram:dm:crash"
KILLS = 40
TEXT = re.compile(r"(\d+)-(\d+):x*")

# Entries of very different sizes, so that kills land in small and in long writes (a fatal
# signal can stop a large write() part-way, leaving a torn line).
WRITER = """
import random, sys
from pathlib import Path
from moltis_desktop.sessions.store import SessionStore
store = SessionStore(Path(sys.argv[1]))
run, rng = int(sys.argv[2]), random.Random(int(sys.argv[3]))
print("ready", flush=True)
i = 0
while True:
    size = rng.choices((0, 10, 1_000, 30_000, 300_000), weights=(3, 3, 3, 2, 1))[0]
    entry = {"type": "message", "message": {
        "role": "user", "content": [{"type": "text", "text": f"{run}-{i}:" + "x" * size}]}}
    entry_id = store.append(sys.argv[4], entry)
    if i % 7 == 0:
        store.add_usage(sys.argv[4], "m", "p", {"input": 1, "output": 2})
    print(entry_id, flush=True)
    i += 1
"""


def _run_and_kill(state: Path, run: int, seed: int, delay: float) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state), str(run), str(seed), KEY],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the writer died before it was killed"
    # Only ids printed in full: the writer prints an id after append() returned.
    return [line.decode() for line in out.split(b"\n")[:-1]]


def _check(state: Path, completed: list[str], kills: int, seed: int, usage_done: int) -> None:
    store = SessionStore(state)  # a fresh process's view
    entry = store.entry(KEY)
    if not completed:
        return
    assert entry is not None, seed
    path = store.transcript_path(KEY)
    assert path is not None
    complete_lines = path.read_bytes().count(b"\n")
    entries = store.transcript(KEY)
    # Every complete line is whole JSON (none was skipped); only a last one may be torn.
    assert len(entries) == complete_lines, f"seed {seed}: unreadable lines"
    assert entries[0]["type"] == "session"
    body = entries[1:]
    ids = [e["id"] for e in body]
    assert len(set(ids)) == len(ids), f"seed {seed}: duplicate ids"
    assert [e["parentId"] for e in body] == [None, *ids[:-1]], f"seed {seed}: broken chain"
    for e in body:
        (block,) = e["message"]["content"]
        assert TEXT.fullmatch(block["text"]), f"seed {seed}: garbled text in {e['id']}"
    # Every id a writer finished is there, in order; besides them, at most one line per
    # kill (written, but the writer died before it could say so).
    position = {entry_id: index for index, entry_id in enumerate(ids)}
    missing = [c for c in completed if c not in position]
    assert not missing, f"seed {seed}: lost {len(missing)} completed entries"
    order = [position[c] for c in completed]
    assert order == sorted(order), f"seed {seed}: completed entries out of order"
    assert len(ids) - len(completed) <= kills, f"seed {seed}: unexpected extra entries"
    # The index may lag the transcript by the entry in flight, never the completed ones.
    assert entry is not None
    assert len(completed) <= entry.message_count <= len(ids), seed
    json.loads((path.parent / "sessions.json").read_bytes())
    # The ledger reads, torn line or not: every usage record a writer finished is there (at
    # most one more per writer, finished just before the kill but never acknowledged).
    calls = store.usage.summarize().totals.calls
    assert usage_done <= calls <= usage_done + kills, (calls, usage_done, seed)


def test_sigkilled_writer_loses_nothing_it_completed(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    state = tmp_path / "state"
    completed: list[str] = []
    usage_done = 0
    started = time.monotonic()
    for run in range(KILLS):
        # Mostly mid-stream kills, some right at start-up (session creation, first append).
        delay = rng.choice((0.0, 0.005)) if run % 8 == 0 else rng.uniform(0.01, 0.15)
        printed = _run_and_kill(state, run, rng.randrange(1 << 30), delay)
        completed += printed
        # The writer records usage before printing ids 0, 7, 14, … of its run.
        usage_done += (len(printed) + 6) // 7
        _check(state, completed, run + 1, seed, usage_done)
    elapsed = time.monotonic() - started
    assert completed, "no writer completed a single append"
    assert elapsed < 60, f"{KILLS} kills took {elapsed:.1f} s"
    # After all that, a writer still appends cleanly after the last complete line.
    store = SessionStore(state)
    last = store.transcript(KEY)[-1]["id"]
    new_id = store.append(KEY, {"type": "message", "message": {"role": "user", "content": []}})
    tail = store.transcript(KEY)[-1]
    assert (tail["id"], tail["parentId"]) == (new_id, last)
