"""The MLX engine: one thread per process owns every decoding step.

asyncio code never touches MLX while a model generates. Requests are posted to
the engine thread as commands; it runs one `BatchGenerator` per resident model,
so concurrent requests for a model share each decoding step (continuous
batching), and hands text back to each request's event loop in one call per
step. Models are loaded on the same thread: MLX state is per thread, and a
thread that used MLX must not exit while the interpreter finalizes (its
thread-local destructors would abort the process), so MLX lives on exactly one
long-lived thread. A load therefore pauses the decoding of other resident
models for its duration.

A finished or cancelled sequence leaves its KV cache in the prompt cache
(prompt_cache.py: per loaded model, one byte budget per process); a new
sequence starts from the longest cached prefix of its prompt and prefills only
the rest. Long prefills are cut into chunks between decode steps (prefill.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from ..errors import BackendUnavailable, ModelLoadError
from .chunks import Chunk, EngineStats, GenerationParams, merge
from .model import LoadedModel, ModelSpec, load_model
from .prompt_cache import PromptCache, default_max_bytes
from .sampling import make_sampler
from .sequence import Sequence, deliver, engine_error
from .stops import StopMatcher

__all__ = ["Chunk", "Engine", "EngineStats", "GenerationParams"]

logger = logging.getLogger(__name__)

# How long a just-loaded model is kept from eviction while its waiters take leases.
FRESH_SECONDS = 1.0


class Engine:
    def __init__(
        self,
        *,
        max_resident_models: int = 2,
        max_batch_size: int = 32,
        prefill_step_size: int = 2048,
        slot_wait_seconds: float = 300.0,
        prompt_cache_bytes: int | None = None,
        loader: Callable[[ModelSpec], LoadedModel] = load_model,
    ) -> None:
        self.max_resident_models = max(1, max_resident_models)
        self.max_batch_size = max_batch_size
        self.prefill_step_size = prefill_step_size
        self.slot_wait_seconds = slot_wait_seconds
        self._load = loader
        self._lock = threading.Lock()
        self._resident: dict[str, LoadedModel] = {}
        self._loading: dict[str, Future[LoadedModel]] = {}
        # The last load error per model name, until it loads: what the admin shows.
        self._failures: dict[str, str] = {}
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._queued = 0  # submitted, not yet inserted into a batch
        self._active: dict[LoadedModel, dict[int, Sequence]] = {}
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()  # not _lock: _post runs under it
        self._steps = 0
        self._prompt_tokens = 0
        self._generated = 0
        self._closed = False
        self._prompt_cache = PromptCache(
            default_max_bytes() if prompt_cache_bytes is None else prompt_cache_bytes
        )

    # ----------------------------------------------------------- asyncio side

    @contextlib.asynccontextmanager
    async def lease(self, spec: ModelSpec) -> AsyncIterator[LoadedModel]:
        """The model, loaded, and protected from eviction until the block ends."""
        model = await self._acquire(spec)
        try:
            yield model
        finally:
            with self._lock:
                model.leases -= 1
                model.last_used = time.monotonic()

    async def _acquire(self, spec: ModelSpec) -> LoadedModel:
        deadline = time.monotonic() + self.slot_wait_seconds
        while True:
            with self._lock:
                model = self._resident.get(spec.name)
                if model is not None and model.spec == spec:
                    model.leases += 1
                    model.last_used = time.monotonic()
                    model.fresh_until = 0.0
                    return model
                future = self._start_load_locked(spec)
            if future is None:
                # Every resident model is serving requests: wait for one to finish
                # rather than evict a model mid-generation.
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"model {spec.name!r} cannot be loaded: all "
                        f"{self.max_resident_models} model slots are busy"
                    )
                await asyncio.sleep(0.05)
                continue
            try:
                await asyncio.wrap_future(future)
            except Exception as exc:
                raise ModelLoadError(f"model {spec.name!r} failed to load: {exc}") from exc

    def preload(self, spec: ModelSpec) -> Future[LoadedModel] | None:
        """Start loading a model in the background (used for `preload` models)."""
        with self._lock:
            if spec.name in self._resident and self._resident[spec.name].spec == spec:
                return None
            return self._start_load_locked(spec)

    def _start_load_locked(self, spec: ModelSpec) -> Future[LoadedModel] | None:
        pending = self._loading.get(spec.name)
        if pending is not None:
            return pending  # at most one load per model at a time
        stale = self._resident.get(spec.name)
        if stale is not None:
            # Its configuration changed (say, a new path): replace it once idle.
            if stale.leases:
                return None
            self._evict_locked(stale)
        now = time.monotonic()
        while len(self._resident) + len(self._loading) >= self.max_resident_models:
            # A model loaded a moment ago is not idle yet: its requests are about
            # to take their leases. Evicting it now would make loads thrash.
            idle = [m for m in self._resident.values() if m.leases == 0 and m.fresh_until < now]
            if not idle:
                return None
            self._evict_locked(min(idle, key=lambda m: m.last_used))
        future: Future[LoadedModel] = Future()
        self._loading[spec.name] = future
        future.add_done_callback(lambda f: self._loaded(spec, f))
        self._post("load", (spec, future))
        return future

    def _loaded(self, spec: ModelSpec, future: Future[LoadedModel]) -> None:
        with self._lock:
            self._loading.pop(spec.name, None)
            if future.exception() is None:
                model = future.result()
                model.last_used = time.monotonic()
                model.fresh_until = model.last_used + FRESH_SECONDS
                self._resident[spec.name] = model
                self._failures.pop(spec.name, None)
                logger.info("model %s loaded from %s", spec.name, spec.path)
            else:
                # Dropped from _loading, so the next request retries the load.
                self._failures[spec.name] = str(future.exception())[:500]
                logger.error("model %s failed to load: %s", spec.name, future.exception())

    def _evict_locked(self, model: LoadedModel) -> None:
        del self._resident[model.spec.name]
        self._post("unload", model)
        logger.info("model %s unloaded (least recently used)", model.spec.name)

    async def generate(
        self, model: LoadedModel, prompt: list[int], params: GenerationParams
    ) -> AsyncGenerator[Chunk, None]:
        """Generate from a leased model; closing the iterator cancels the sequence."""
        if self._closed:
            raise BackendUnavailable("the local engine is shutting down")
        seq = Sequence(model=model, prompt=prompt, params=params, loop=asyncio.get_running_loop())
        with self._lock:
            self._queued += 1
        self._post("submit", seq)
        try:
            while True:
                chunk = await seq.inbox.get()
                # Merge what else is already waiting: a slow reader gets fewer,
                # larger chunks instead of falling behind one token at a time.
                while chunk.finish_reason is None and chunk.error is None:
                    try:
                        nxt = seq.inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    chunk = merge(chunk, nxt)
                if chunk.error is not None:
                    raise chunk.error
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                seq.done = True
                self._post("cancel", seq)

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                resident_models=sorted(self._resident),
                loading_models=sorted(self._loading),
                failed_models=dict(self._failures),
                active_sequences=sum(len(s) for s in self._active.values()),
                queued_requests=self._queued,
                decode_steps=self._steps,
                prompt_tokens_processed=self._prompt_tokens,
                generated_tokens=self._generated,
                prompt_cache_lookups=self._prompt_cache.lookups,
                prompt_cache_hits=self._prompt_cache.hits,
                prompt_cache_tokens_reused=self._prompt_cache.tokens_reused,
                prompt_cache_bytes=self._prompt_cache.nbytes,
                prompt_cache_max_bytes=self._prompt_cache.max_bytes,
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._post("stop", None)
            self._thread.join(timeout=10)
        with self._lock:
            models = list(self._resident.values())
            self._resident.clear()
        for model in models:
            model.release()

    def _post(self, command: str, payload: Any) -> None:
        if self._thread is None:
            with self._thread_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="mlx-engine", daemon=True
                    )
                    self._thread.start()
        self._commands.put((command, payload))

    # ------------------------------------------------------------ engine side

    def _run(self) -> None:
        while True:
            busy = any(self._active.values())
            try:
                command, payload = self._commands.get(block=not busy)
            except queue.Empty:
                command = None
            while command is not None:
                if command == "stop":
                    self._fail_all(BackendUnavailable("the local engine is shutting down"))
                    self._prompt_cache.clear()  # its arrays belong to this thread
                    return
                try:
                    self._handle(command, payload)
                except Exception:
                    # This is the only MLX thread: it must outlive any one bad command.
                    logger.exception("engine command %r failed", command)
                try:
                    command, payload = self._commands.get_nowait()
                except queue.Empty:
                    command = None
            outbox: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, Chunk]]] = {}
            for model in [m for m, seqs in self._active.items() if seqs]:
                self._step(model, outbox)
            for loop, items in outbox.items():
                self._dispatch(loop, items)

    def _dispatch(
        self, loop: asyncio.AbstractEventLoop, items: list[tuple[Sequence, Chunk]]
    ) -> None:
        try:
            loop.call_soon_threadsafe(deliver, items)
        except RuntimeError:
            # The request's event loop is gone: nobody will read, stop generating.
            for seq, _ in items:
                seq.done = True
                self._handle("cancel", seq)

    def _handle(self, command: str, payload: Any) -> None:
        if command == "submit":
            self._insert(payload)
        elif command == "load":
            spec, future = payload
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._load(spec))
                except Exception as exc:
                    future.set_exception(exc)
        elif command == "cancel":
            seq: Sequence = payload
            seqs = self._active.get(seq.model, {})
            if seq.uid is not None and seqs.pop(seq.uid, None) is not None:
                self._remove(seq)
        elif command == "unload":
            model: LoadedModel = payload
            self._active.pop(model, None)
            self._prompt_cache.drop(model)
            model.release()

    def _insert(self, seq: Sequence) -> None:
        with self._lock:
            self._queued -= 1
        if seq.done:
            return  # cancelled while queued
        model = seq.model
        try:
            generator = model.ensure_generator(
                max_batch_size=self.max_batch_size, prefill_step_size=self.prefill_step_size
            )
            params = seq.params
            sampler = None  # None = the generator's shared greedy sampler, batched
            if params.temperature > 0:
                seed = params.seed if params.seed is not None else secrets.randbits(62)
                sampler = make_sampler(params.temperature, params.top_p, params.top_k, seed)
            cache, seq.cached = self._prompt_cache.fetch(model, seq.prompt)
            (uid,) = generator.insert(
                [seq.prompt[seq.cached :]],
                max_tokens=[params.max_tokens],
                caches=[cache],
                all_tokens=[seq.prompt[: seq.cached]],
                samplers=[sampler],
            )
        except Exception as exc:
            logger.exception("engine failed to accept a request for %s", model.spec.name)
            self._dispatch(seq.loop, [(seq, Chunk("", 0, error=engine_error(exc)))])
            return
        # Accepted: the reader learns how much of its prompt was reused before any text.
        self._dispatch(seq.loop, [(seq, Chunk("", 0, cached_tokens=seq.cached))])
        seq.uid = uid
        seq.detokenizer = model.tokenizer.detokenizer
        seq.stops = StopMatcher(params.stop)
        self._active.setdefault(model, {})[uid] = seq

    def _step(self, model: LoadedModel, outbox: dict[Any, list[tuple[Sequence, Chunk]]]) -> None:
        seqs = self._active[model]
        pacer = model.pacer
        waiting = [len(s.prompt) - s.cached for s in seqs.values() if s.generated == 0]
        model.generator.prefill_step_size = pacer.chunk(
            decoding=len(waiting) < len(seqs),
            prefilling=len(waiting),
            longest=max(waiting, default=0),
        )
        try:
            with model.generator.stats() as work:
                _, responses = model.generator.next()
        except Exception as exc:
            # The batch state is unknown after a failure: fail its requests
            # and start the model over with a fresh generator.
            logger.exception("decoding step failed for %s", model.spec.name)
            error = engine_error(exc)
            for seq in seqs.values():
                outbox.setdefault(seq.loop, []).append((seq, Chunk("", 0, error=error)))
            seqs.clear()
            model.reset_generator()
            return
        pacer.observe(work)
        self._steps += 1
        self._prompt_tokens += work.prompt_tokens
        self._generated += work.generation_tokens
        finished: list[int] = []
        for response in responses:
            live = seqs.get(response.uid)
            if live is None:
                continue
            chunk = live.advance(response.token, response.finish_reason)
            if chunk.finish_reason is not None:
                finished.append(response.uid)
                if response.finish_reason is None:
                    # A stop string ended it; the generator does not know yet.
                    self._remove(live)
                else:
                    self._prompt_cache.insert(model, response.all_tokens, response.prompt_cache)
            if chunk.text or chunk.finish_reason is not None:
                outbox.setdefault(live.loop, []).append((live, chunk))
        for uid in finished:
            seqs.pop(uid, None)

    def _remove(self, seq: Sequence) -> None:
        """Take a sequence out of its batch, keeping what it computed for reuse."""
        kept = seq.model.generator.remove([seq.uid], return_prompt_caches=True)
        for cache, tokens in kept.values():
            # Still queued: its cache is the one it was given, already in the store.
            if len(tokens) > seq.cached:
                self._prompt_cache.insert(seq.model, tokens, cache)

    def _fail_all(self, error: BaseException) -> None:
        outbox: dict[Any, list[tuple[Sequence, Chunk]]] = {}
        for seqs in self._active.values():
            for seq in seqs.values():
                outbox.setdefault(seq.loop, []).append((seq, Chunk("", 0, error=error)))
            seqs.clear()
        for loop, items in outbox.items():
            self._dispatch(loop, items)
