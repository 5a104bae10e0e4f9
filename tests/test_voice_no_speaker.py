"""`moltis voice listen` on a machine with no speaker (no sound server, no sound card): the
real CLI as a child process, against a gateway process with the fake LLM. The reply is
printed, and the CLI says once that it was not spoken; the run succeeds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support import speech
from tests.support.fake_llm import FakeLLM, Turn, agent_config, message_texts
from tests.support.process import gateway_process

QUESTION = "what is on my calendar today"
REPLY = "You have a meeting with Sam at ten."


def _no_sound(tmp_path: Path) -> dict[str, str]:
    """No sound server (the one named does not exist) and no sound card: no devices."""
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {"XDG_RUNTIME_DIR": str(runtime), "PULSE_SERVER": f"unix:{runtime}/nothing-here"}


def test_listen_on_a_file_without_a_speaker_prints_the_reply_and_says_it_was_not_spoken(
    tmp_path: Path,
) -> None:
    from tests.test_cli import moltis

    wav = speech.write(tmp_path / "q.wav", speech.wake_then_question(QUESTION))

    async def run() -> None:
        async with FakeLLM() as fake:
            fake.script(Turn(text=REPLY), Turn(text=REPLY))
            home = tmp_path / "home"
            (home / "config").mkdir(parents=True)
            (home / "config" / "moltis.toml").write_text(agent_config("openai", fake))
            with gateway_process(
                home, token="voice-cli-token-0123456789", FAKE_LLM_KEY="fake-key-0"
            ) as gw:
                env = {**gw.env, "MOLTIS_URL": gw.url, **_no_sound(tmp_path)}
                devices = await asyncio.to_thread(moltis, env, "voice", "devices", "--json")
                assert json.loads(devices.stdout)["devices"] == [], "this test needs no devices"

                done = await asyncio.to_thread(
                    moltis, env, "voice", "listen", "--input", str(wav), timeout=120
                )
                assert done.returncode == 0, done.stderr
                lines = done.stdout.splitlines()
                assert f"reply: {REPLY}" in lines, done.stdout
                # Nothing was synthesised for a speaker that is not there.
                assert not any(line.startswith("speaking") for line in lines), done.stdout
                assert "error" not in done.stderr, done.stderr
                notes = [ln for ln in done.stderr.splitlines() if ln.startswith("(not spoken:")]
                assert len(notes) == 1, done.stderr
                assert "no speaker found" in notes[0] and "-o reply.wav" in notes[0], notes
                users = message_texts(fake.bodies("/v1/chat/completions")[-1])
                assert speech.similar(users[-1], QUESTION) >= 0.8, users

                # The same for scripts: a `not-spoken` event right after the reply.
                done = await asyncio.to_thread(
                    moltis, env, "voice", "listen", "--input", str(wav), "--json", timeout=120
                )
                assert done.returncode == 0, done.stderr
                events = [json.loads(line) for line in done.stdout.splitlines() if line]
                kinds = [e["event"] for e in events]
                assert "speaking" not in kinds, kinds
                assert kinds[kinds.index("reply") + 1] == "not-spoken", kinds
                note = events[kinds.index("not-spoken")]
                assert "no speaker found" in note["reason"], note
                assert next(e for e in events if e["event"] == "reply")["text"] == REPLY

    asyncio.run(run())
