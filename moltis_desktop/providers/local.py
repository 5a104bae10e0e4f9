"""The embedded local model: a GGUF chat model run in-process by llama.cpp (provider `local`).

It is the provider that answers when nothing else is set up: no key, no network, no local
server. The runtime is `llama-cpp-python` (why: docs/ARCHITECTURE.md, "The embedded local
model"), imported on the first turn, off the event loop.

- One engine per provider: the model loads lazily on the first turn and is unloaded after
  `models.local.idle_unload_s` without one, so an idle gateway pays nothing for it.
- Inference runs in one worker thread, never on the event loop; turns are serialised (one
  at a time, in arrival order). A stopped turn stops the generation at its next token.
- The prompt cache is kept per conversation: llama.cpp's state after each reply is stored
  (LRU, bounded) under its tokens, and a turn resumes from the longest stored prefix, so a
  session's history is not evaluated again when two sessions alternate.
- Generation stops on the model's end tokens (the GGUF's EOS, and the chat templates' end
  markers as stop strings, which some quantisations leave as plain text).
- Lean mode: the agent offers a local model no tools unless `models.local.tools` names them
  or the message asks for one with `/tool_name` (see `ProviderCapabilities.tool_allowlist`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltis_desktop.config.settings import LocalModelSettings
from moltis_desktop.providers.base import (
    Completed,
    CompletionRequest,
    ErrorKind,
    Message,
    ModelInfo,
    ProviderCapabilities,
    ProviderError,
    ProviderEvent,
    StopReason,
    TextDelta,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
    nothing_set_up,
)
from moltis_desktop.providers.resolved import ProviderConfig

if TYPE_CHECKING:
    from moltis_desktop.providers.local_catalog import LocalModelManager

_LOGGER = logging.getLogger(__name__)

STOP_STRINGS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "</s>")
"""End-of-turn markers of the usual chat templates (ChatML, Llama 3, Phi, Mistral)."""
PROMPT_CACHE_BYTES = 256 * 1024 * 1024
"""Upper bound of the stored prompt states (llama.cpp's KV cache per conversation)."""
MAX_THREADS = 8


def default_threads() -> int:
    """Threads for inference: every CPU the process may use on small machines, half of them
    (the physical cores, usually) on bigger ones, at most `MAX_THREADS`."""
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    threads = logical if logical <= 4 else logical // 2
    return max(1, min(MAX_THREADS, threads))


def _release_memory() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise, and the RSS stays up)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------------------- messages


def to_chat_messages(system: str, messages: tuple[Message, ...]) -> list[dict[str, str]]:
    """Our conversation as plain chat messages (lean mode: tool results become user text,
    images are left out: the local models read text only)."""
    out: list[dict[str, str]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "assistant":
            text = message.text
            if text:
                out.append({"role": "assistant", "content": text})
            continue
        results = [p for p in message.parts if isinstance(p, ToolResult)]
        lines = [
            f"[{r.name} {'failed' if r.is_error else 'returned'}]\n{r.content}" for r in results
        ]
        text = "".join(p.text for p in message.parts if isinstance(p, TextPart))
        if text:
            lines.append(text)
        if lines:
            out.append({"role": "user", "content": "\n\n".join(lines)})
    return out


_TOOL_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
"""The hermes tool-call convention (Qwen's chat template uses it; others follow it)."""
_TAGGED = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def tool_prompt(tools: tuple[ToolSpec, ...]) -> str:
    """The system-prompt block offering `tools` (rendered here rather than by the GGUF's
    chat template, which many small models do not have tool support in)."""
    lines = [
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                },
            },
            ensure_ascii=False,
        )
        for t in tools
    ]
    return _TOOL_PROMPT.format(tools="\n".join(lines))


def parse_tool_calls(text: str, tools: tuple[ToolSpec, ...]) -> list[ToolCall]:
    """Tool calls in a local model's reply, read leniently: tagged (`<tool_call>{…}`),
    fenced (a ```json block) or the bare JSON object. Only offered tools count."""
    names = {t.name for t in tools}
    candidates = _TAGGED.findall(text) or _FENCED.findall(text)
    stripped = text.strip()
    if not candidates and stripped.startswith("{") and stripped.endswith("}"):
        candidates = [stripped]
    calls: list[ToolCall] = []
    for raw in candidates:
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("name") not in names:
            continue
        arguments = data.get("arguments", data.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                continue
        if isinstance(arguments, dict):
            calls.append(ToolCall(f"call_{uuid.uuid4().hex[:12]}", data["name"], arguments))
    return calls


# ---------------------------------------------------------------------------- the engine


@dataclass
class _Loaded:
    path: Path
    llama: Any
    threads: int
    context_tokens: int
    load_s: float


class _Generation:
    """One reply being generated in the worker thread, read by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.stop = threading.Event()

    def put(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))


class LocalEngine:
    """The llama.cpp model of one provider: loaded on demand, one turn at a time, unloaded
    when idle. Every llama.cpp call happens on the engine's single worker thread."""

    def __init__(self, settings: LocalModelSettings) -> None:
        self.settings = settings
        self._turn = asyncio.Lock()
        self._loaded: _Loaded | None = None
        self._unload_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._worker = _Worker()
        self.loads = 0
        """How many times a model was loaded (tests and `moltis status` read it)."""

    @property
    def loaded_path(self) -> Path | None:
        return self._loaded.path if self._loaded is not None else None

    @property
    def prompt_cache_hits(self) -> int:
        """Turns of the loaded model that resumed a conversation from its cached state."""
        return int(getattr(self._loaded.llama, "resumed", 0)) if self._loaded else 0

    @property
    def threads(self) -> int:
        return self.settings.threads or default_threads()

    # ------------------------------------------------------------ load, unload

    async def _ensure(self, path: Path) -> _Loaded:
        loaded = self._loaded
        threads, context = self.threads, self.settings.context_tokens
        if (
            loaded is not None
            and loaded.path == path
            and (loaded.threads, loaded.context_tokens) == (threads, context)
        ):
            return loaded
        if loaded is not None:
            await self._unload_now()
        started = time.perf_counter()
        llama = await self._worker.run(_load_llama, path, context, threads)
        loaded = _Loaded(path, llama, threads, context, time.perf_counter() - started)
        self._loaded = loaded
        self.loads += 1
        _LOGGER.info(
            "local model %s loaded in %.2f s (%d threads, context %d)",
            path.name,
            loaded.load_s,
            threads,
            self.settings.context_tokens,
        )
        return loaded

    async def _unload_now(self) -> None:
        """Free the model (under the turn lock): `loaded_path` turns None once its memory
        is back with the OS."""
        loaded = self._loaded
        if loaded is None:
            return
        await self._worker.run(_close_llama, loaded.llama)
        loaded.llama = None
        del loaded
        await self._worker.run(_release_memory)
        self._loaded = None
        _LOGGER.info("local model unloaded")

    def _schedule_unload(self) -> None:
        if self._unload_handle is not None:
            self._unload_handle.cancel()
            self._unload_handle = None
        idle = self.settings.idle_unload_s
        if idle > 0 and self._loaded is not None and not self._closed:
            loop = asyncio.get_running_loop()
            self._unload_handle = loop.call_later(idle, self._idle_unload)

    def _idle_unload(self) -> None:
        self._unload_handle = None
        task = asyncio.get_running_loop().create_task(self._unload_if_idle(), name="local-unload")
        task.add_done_callback(_log_failure)

    async def _unload_if_idle(self) -> None:
        if self._turn.locked():  # a turn began meanwhile: it schedules the next check
            return
        async with self._turn:
            await self._unload_now()

    async def load(self, path: Path) -> float:
        """Load `path` now (waits for the running turn); the seconds loading took (0 when
        it was loaded already). The idle timer starts."""
        async with self._turn:
            loads = self.loads
            loaded = await self._ensure(path)
            self._schedule_unload()
            return loaded.load_s if self.loads > loads else 0.0

    async def unload(self) -> None:
        """Unload now (waits for the running turn)."""
        async with self._turn:
            await self._unload_now()

    async def close(self) -> None:
        self._closed = True
        if self._unload_handle is not None:
            self._unload_handle.cancel()
        async with self._turn:
            await self._unload_now()
        self._worker.close()

    # ------------------------------------------------------------ a turn

    async def generate(
        self,
        path: Path,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float | None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """Yield ("delta", text) … then ("done", (finish_reason, prompt, completion))."""
        async with self._turn:
            if self._unload_handle is not None:
                self._unload_handle.cancel()
                self._unload_handle = None
            try:
                loaded = await self._ensure(path)
                generation = _Generation(asyncio.get_running_loop())
                job = self._worker.submit(
                    _generate, loaded.llama, messages, max_tokens, temperature, generation
                )
                try:
                    while True:
                        kind, value = await generation.queue.get()
                        if kind == "error":
                            raise value
                        yield kind, value
                        if kind == "done":
                            break
                finally:
                    # Stopped (or failed) half-way: the thread stops at its next token; the
                    # next turn waits for it, so turns never overlap on the model.
                    generation.stop.set()
                    await asyncio.shield(asyncio.wrap_future(job))
            finally:
                self._schedule_unload()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("unloading the local model failed", exc_info=task.exception())


class _Worker:
    """A single thread for every llama.cpp call (started on first use)."""

    def __init__(self) -> None:
        self._executor: Any = None

    def _pool(self) -> Any:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm")
        return self._executor

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool().submit(fn, *args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------- in the thread


def _import_llama_cpp() -> Any:
    module = sys.modules.get("llama_cpp")
    if module is not None:
        return module
    enabled = gc.isenabled()
    gc.disable()
    try:
        import llama_cpp
    finally:
        gc.freeze()  # the module lives as long as the process (see providers.sdk)
        if enabled:
            gc.enable()
    return llama_cpp


def _load_llama(path: Path, context_tokens: int, threads: int) -> Any:
    try:
        llama_cpp = _import_llama_cpp()
    except ImportError as exc:
        raise ProviderError(
            "local",
            "setup",
            "the local model runtime (llama-cpp-python) is not installed: run `make run` "
            f"(or scripts/install.sh run), which builds it once ({exc})",
        ) from exc
    try:
        llama = _lean_llama_class(llama_cpp)(
            model_path=str(path),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ProviderError(
            "local",
            "bad_request",
            f"the local model {path.name} cannot be loaded ({exc}): the file may be damaged; "
            "run `moltis models local remove` and download it again",
        ) from exc
    llama.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=PROMPT_CACHE_BYTES))
    return llama


@functools.cache
def _lean_llama_class(llama_cpp: Any) -> Any:
    """`llama_cpp.Llama` with a prompt-cache state that leaves out the logits matrix.

    llama-cpp-python's `save_state` copies `scores` (tokens x vocabulary floats: 600 KB a
    token for Qwen's 152k vocabulary, 300 MB for a 500-token conversation) into every
    cached state, although without `logits_all` sampling never reads them: the cache made
    the gateway's peak RSS grow by gigabytes. Here a state is the KV cache and the token
    ids only (llama.cpp's own state, a few MB), which is all a resumed turn needs.
    """
    import numpy as np

    class LeanLlama(llama_cpp.Llama):  # type: ignore[misc]
        def save_state(self) -> Any:
            ctx = self._ctx.ctx
            size = int(llama_cpp.llama_state_get_size(ctx))
            buffer = (ctypes.c_uint8 * size)()
            used = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
            if used > size:
                raise RuntimeError("failed to copy the llama.cpp state")
            return llama_cpp.LlamaState(
                input_ids=self.input_ids[: self.n_tokens].copy(),
                scores=np.empty((0, self._n_vocab), dtype=np.single),
                n_tokens=self.n_tokens,
                llama_state=ctypes.string_at(buffer, used),
                llama_state_size=used,
                seed=self._seed,
            )

        resumed = 0
        """Turns that resumed from a cached state (the prompt cache's hits)."""

        def load_state(self, state: Any) -> None:
            self.resumed += 1
            self.input_ids[: state.n_tokens] = state.input_ids[: state.n_tokens]
            self.n_tokens = state.n_tokens
            self._requires_eval = True
            self._seed = state.seed
            data = (ctypes.c_uint8 * state.llama_state_size).from_buffer_copy(state.llama_state)
            ctx = self._ctx.ctx
            if llama_cpp.llama_state_set_data(ctx, data, state.llama_state_size) != (
                state.llama_state_size
            ):
                raise RuntimeError("failed to restore the llama.cpp state")

    return LeanLlama


def _close_llama(llama: Any) -> None:
    with contextlib.suppress(Exception):
        llama.set_cache(None)
    llama.close()


def _generate(
    llama: Any,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float | None,
    out: _Generation,
) -> None:
    completion = 0
    finish: str | None = None
    try:
        chunks = llama.create_chat_completion(
            messages=messages,
            stream=True,
            max_tokens=max_tokens,
            temperature=0.2 if temperature is None else temperature,
            stop=list(STOP_STRINGS),
        )
        try:
            for chunk in chunks:
                if out.stop.is_set():
                    finish = "aborted"
                    break
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                if text:
                    completion += 1
                    out.put("delta", text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        finally:
            chunks.close()
        total = int(llama.n_tokens)
        out.put("done", (finish or "stop", max(0, total - completion), completion))
    except ProviderError as exc:
        out.put("error", exc)
    except Exception as exc:  # llama.cpp's errors: the turn fails with what it said
        message = str(exc)
        kind: ErrorKind = "context_overflow" if "context" in message.lower() else "server"
        out.put("error", ProviderError("local", kind, f"the local model failed: {message}"))


# ---------------------------------------------------------------------------- the provider

_FINISH: dict[str, StopReason] = {"stop": "end_turn", "length": "max_tokens"}


class LocalProvider:
    """Provider `local`: the embedded llama.cpp model (see the module docstring)."""

    def __init__(
        self,
        config: ProviderConfig,
        settings: LocalModelSettings,
        models: LocalModelManager | None,
        engine: LocalEngine | None = None,
    ) -> None:
        """`engine`: shared across config reloads (`providers.models.Models` keeps one), so
        a loaded model is not loaded twice; else the provider has its own."""
        self.id = config.id
        self.config = config
        self.settings = settings
        self.models = models
        base = config.capabilities
        self.capabilities = ProviderCapabilities(
            tools=True,
            streaming=True,
            vision=False,
            thinking=False,
            prompt_caching=True,
            default_context_window=settings.context_tokens or base.default_context_window,
            tool_allowlist=tuple(settings.tools),
        )
        self._own_engine = engine is None
        self.engine = engine or LocalEngine(settings)
        self.engine.settings = settings

    # ------------------------------------------------------------ models

    def default_model(self) -> str:
        """The model a turn uses when none is named: `models.local.model`, else the best
        installed (a downloaded tier, else the built-in)."""
        if self.settings.model:
            return self.settings.model
        if self.models is not None:
            return self.models.best_installed() or ""
        return ""

    async def model_path(self, model: str) -> Path:
        """The `.gguf` file of `model` (a catalog id or a path); ProviderError `setup`
        saying what to do when it is not installed."""
        wanted = model if model and model != "default" else self.default_model()
        if wanted.endswith(".gguf") or os.sep in wanted:
            path = Path(wanted).expanduser()  # noqa: ASYNC240 (a stat, no real I/O wait)
            if path.is_file():
                return path
            raise ProviderError(
                self.id,
                "setup",
                f"the local model file {path} does not exist: fix models.local.model, or "
                "run `moltis models local list` to pick one",
            )
        if self.models is None:
            raise _setup_error(self.id, None)
        if not wanted:  # nothing named, nothing installed: offer the tier for this machine
            wanted = self.models.recommended()
        try:
            entry = self.models.model(wanted)
        except Exception as exc:  # an unknown id: the manager's message names close ones
            raise ProviderError(self.id, "not_found", str(exc)) from exc
        if self.models.path(wanted) is None:
            raise _setup_error(self.id, entry)
        return await self.models.materialize(wanted)

    async def list_models(self) -> list[ModelInfo]:
        if self.models is None:
            return []
        out = []
        for status in self.models.list():
            if status.path is None:
                continue
            model = status.model
            out.append(
                ModelInfo(
                    id=model.id,
                    provider=self.id,
                    name=model.title,
                    context_window=self.settings.context_tokens,
                    tools=False,
                    source="discovered",
                )
            )
        return out

    # ------------------------------------------------------------ a call

    async def stream(self, request: CompletionRequest) -> AsyncIterator[ProviderEvent]:
        path = await self.model_path(request.model)
        system = request.system
        if request.tools:  # lean mode let these through: an allowlist or a /command
            system = (
                f"{system}\n\n{tool_prompt(request.tools)}"
                if system
                else tool_prompt(request.tools)
            )
        messages = to_chat_messages(system, request.messages)
        max_tokens = min(request.max_tokens, self.settings.max_tokens or request.max_tokens)
        text: list[str] = []
        usage = Usage()
        finish = "stop"
        async for kind, value in self.engine.generate(
            path, messages, max_tokens=max_tokens, temperature=request.temperature
        ):
            if kind == "delta":
                text.append(value)
                if not request.tools:  # with tools, the reply may be a call: held back
                    yield TextDelta(value)
            else:
                finish, prompt, completion = value
                usage = Usage(input_tokens=prompt, output_tokens=completion)
        body = "".join(text).strip()
        calls = parse_tool_calls(body, request.tools) if request.tools else []
        if calls:
            yield Completed(Message("assistant", tuple(calls)), "tool_use", usage)
            return
        if request.tools and body:
            yield TextDelta(body)
        yield Completed(
            Message("assistant", (TextPart(body),) if body else ()),
            _FINISH.get(finish, "other"),
            usage,
        )

    async def close(self) -> None:
        if self._own_engine:
            await self.engine.close()


def _setup_error(provider_id: str, entry: Any | None) -> ProviderError:
    if entry is None:
        return nothing_set_up(provider_id)
    return nothing_set_up(
        provider_id,
        model_id=entry.id,
        title=entry.title,
        size_bytes=int(getattr(entry, "size_bytes", 0) or 0),
    )
