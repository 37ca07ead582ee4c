"""The local engine's prompt (prefix) cache: reuse, the byte cap, cancellation,
unloading, shared prefixes, identical greedy output, and prefill that does not
freeze running streams. Real demo model, real MLX; the store's own unit tests
use real mlx-lm KV caches."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from inference.local.backend import LocalBackend
from inference.local.engine import Engine, GenerationParams
from inference.local.model import ModelSpec
from inference.local.prefill import MIN_CHUNK, RAMP_ABOVE, PrefillPacer
from inference.local.prompt_cache import MIN_REUSE, PromptCache
from inference.types import ChatRequest, Message, TextPart, Usage

SYSTEM = "You are a patient guide who explains the sea, ships and the weather. " * 10


def request(messages: list[tuple[str, str]], max_tokens: int = 12) -> ChatRequest:
    return ChatRequest(
        model="demo",
        messages=[Message(role, [TextPart(text)]) for role, text in messages],  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0.0,
    )


async def answer(backend: LocalBackend, messages: list[tuple[str, str]]) -> tuple[str, Usage]:
    result = await backend.complete(request(messages))
    text = "".join(p.text for p in result.content if isinstance(p, TextPart))
    return text, result.finish.usage


async def run(
    engine: Engine, spec: ModelSpec, prompt: list[int], max_tokens: int = 12
) -> tuple[str, int]:
    """Greedy text and the prompt tokens the engine took from its cache."""
    async with engine.lease(spec) as model:
        text, cached = "", None
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
        async for chunk in engine.generate(model, prompt, params):
            if cached is None:
                cached = chunk.cached_tokens
            text += chunk.text
        assert cached is not None
        return text, cached


async def encode(engine: Engine, spec: ModelSpec, messages: list[tuple[str, str]]) -> list[int]:
    async with engine.lease(spec) as model:
        return model.encode_chat([{"role": r, "content": t} for r, t in messages])


def shared_prefix(a: list[int], b: list[int]) -> int:
    same = itertools.takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False))
    return sum(1 for _ in same)


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def spec(demo_model_path: Path) -> ModelSpec:
    return ModelSpec("demo", str(demo_model_path))


@pytest.fixture
async def engines():
    """An engine with the cache and one without: the reference for identical output."""
    cached, plain = Engine(), Engine(prompt_cache_bytes=0)
    yield cached, plain
    cached.close()
    plain.close()


async def test_a_second_turn_reuses_the_first_turns_prefix(
    engines: tuple[Engine, Engine], spec: ModelSpec
) -> None:
    engine, plain = engines
    backend, reference = LocalBackend(engine, spec), LocalBackend(plain, spec)
    turn1 = [("system", SYSTEM), ("user", "Why is the sea salty?")]
    first, usage1 = await answer(backend, turn1)
    assert usage1.cached_tokens == 0
    turn2 = [*turn1, ("assistant", first), ("user", "And why are rivers not?")]
    prompt1, prompt2 = await encode(engine, spec, turn1), await encode(engine, spec, turn2)

    before = engine.stats()
    second, usage2 = await answer(backend, turn2)
    after = engine.stats()
    # All of turn 1's prompt (and the answer's tokens the template renders alike).
    assert len(prompt1) <= usage2.cached_tokens < len(prompt2)
    assert usage2.input_tokens == len(prompt2)
    # Only the rest was prefilled (mlx-lm feeds the last prompt token with the first step).
    prefilled = after.prompt_tokens_processed - before.prompt_tokens_processed
    assert prefilled == len(prompt2) - usage2.cached_tokens - 1
    assert after.prompt_cache_hits == before.prompt_cache_hits + 1
    assert after.prompt_cache_tokens_reused - before.prompt_cache_tokens_reused == (
        usage2.cached_tokens
    )

    before = plain.stats()
    expected, plain_usage = await answer(reference, turn2)
    assert plain_usage.cached_tokens == 0
    assert plain.stats().prompt_tokens_processed - before.prompt_tokens_processed == (
        len(prompt2) - 1
    )
    assert second == expected  # greedy: the cache never changes the answer


async def test_a_cancelled_request_leaves_a_reusable_cache(
    engines: tuple[Engine, Engine], spec: ModelSpec
) -> None:
    engine, plain = engines
    prompt = await encode(engine, spec, [("system", SYSTEM), ("user", "Tell me of tides.")])
    async with engine.lease(spec) as model:
        chunks = engine.generate(model, prompt, GenerationParams(max_tokens=500, temperature=0))
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if chunk.tokens >= 5:
                    break  # the client went away mid-answer
    await until(lambda: engine.stats().active_sequences == 0, "the cancel is processed")
    assert engine.stats().prompt_cache_bytes > 0
    text, cached = await run(engine, spec, prompt, max_tokens=20)
    assert cached == len(prompt) - 1  # all of it but the token fed to the first step
    assert text == (await run(plain, spec, prompt, max_tokens=20))[0]


async def test_the_cap_evicts_least_recently_used_entries(spec: ModelSpec) -> None:
    topics = ["lighthouses", "harbours", "sailing boats", "storm clouds"]
    prompts = []
    probe = Engine()
    try:
        for topic in topics:
            prompts.append(
                await encode(probe, spec, [("system", f"Speak of {topic}. " * 30), ("user", "Go")])
            )
        await run(probe, spec, prompts[0])
        one_entry = probe.stats().prompt_cache_bytes
    finally:
        probe.close()
    assert one_entry > 0

    cap = int(one_entry * 2.5)  # room for two conversations, not three
    engine = Engine(prompt_cache_bytes=cap)
    try:
        for prompt in prompts:
            await run(engine, spec, prompt)
            assert 0 < engine.stats().prompt_cache_bytes <= cap
        # The oldest went (what it shares with the others' openings is all that is
        # reused); the newest is there.
        common = max(shared_prefix(prompts[0], p) for p in prompts[1:])
        assert common < 20 < len(prompts[0])
        assert (await run(engine, spec, prompts[0]))[1] <= common
        assert (await run(engine, spec, prompts[-1]))[1] == len(prompts[-1]) - 1
        assert engine.stats().prompt_cache_bytes <= cap
    finally:
        engine.close()


async def test_unloading_a_model_frees_its_entries(demo_model_path: Path) -> None:
    engine = Engine(max_resident_models=1)
    a, b = (ModelSpec(name, str(demo_model_path)) for name in ("a", "b"))
    try:
        prompt = await encode(engine, a, [("system", SYSTEM), ("user", "Hello")])
        await run(engine, a, prompt)
        assert engine.stats().prompt_cache_bytes > 0
        async with engine.lease(b):  # a is evicted to make room
            await until(lambda: engine.stats().prompt_cache_bytes == 0, "a's entries dropped")
        # Reloaded, a starts with an empty cache: nothing of the old load survives.
        assert (await run(engine, a, prompt))[1] == 0
    finally:
        engine.close()


async def test_conversations_sharing_a_system_prompt_reuse_it(
    engines: tuple[Engine, Engine], spec: ModelSpec
) -> None:
    engine, plain = engines
    asks = ["Why do ships float?", "What is a knot?", "Where do waves come from?"]
    prompts = [await encode(engine, spec, [("system", SYSTEM), ("user", q)]) for q in asks]
    shared = len(await encode(engine, spec, [("system", SYSTEM)])) - 3  # less the generation cue

    async with engine.lease(spec) as model:
        params = GenerationParams(max_tokens=3000, temperature=0.0)
        first = engine.generate(model, prompts[0], params)
        async with contextlib.aclosing(first):
            while (await anext(first)).tokens < 1:
                pass
            # The first is still decoding: the second does not wait for it, it
            # prefills the shared system prompt itself ...
            second = await run(engine, spec, prompts[1])
            assert engine.stats().active_sequences == 1
    assert second[1] == 0
    # ... and once one has finished, a later conversation reuses that prefix.
    third = await run(engine, spec, prompts[2])
    assert third[1] >= shared
    assert second[0] == (await run(plain, spec, prompts[1]))[0]
    assert third[0] == (await run(plain, spec, prompts[2]))[0]


async def test_a_long_prefill_does_not_freeze_running_streams(spec: ModelSpec) -> None:
    """While a ~3,000-token prompt is prefilled, a running stream keeps decoding:
    the prefill goes in slices between its steps, not in 2,048-token blocks."""
    engine = Engine(prefill_step_size=2048)
    try:
        short = await encode(engine, spec, [("user", "Tell me a long story.")])
        unit = len(await encode(engine, spec, [("user", SYSTEM * 2)])) - len(
            await encode(engine, spec, [("user", SYSTEM)])
        )
        long = await encode(engine, spec, [("user", SYSTEM * (3000 // unit))])
        assert 2800 <= len(long) <= 3300
        async with engine.lease(spec) as model:
            params = GenerationParams(max_tokens=3000, temperature=0.0)
            running = engine.generate(model, short, params)
            async with contextlib.aclosing(running):
                while (await anext(running)).tokens < 5:
                    pass
                accepted = asyncio.Event()
                newcomer = asyncio.create_task(first_token(engine, model, long, accepted))
                seen, at_accept = 0, None
                while not newcomer.done():
                    chunk = await anext(running)
                    assert chunk.finish_reason is None, "the stream ended before the prefill"
                    seen = chunk.tokens
                    if at_accept is None and accepted.is_set():
                        at_accept = seen
                await newcomer
        assert at_accept is not None
        # Its tokens between the newcomer's acceptance and the newcomer's first token:
        # 3,000 tokens in 2,048-token blocks would leave it about 3 steps; in slices, many.
        during = seen - at_accept
        print(f"running stream: {during} tokens while {len(long)} were prefilled")
        assert during >= 10, f"only {during} tokens while {len(long)} were prefilled"
    finally:
        engine.close()


async def first_token(
    engine: Engine, model: Any, prompt: list[int], accepted: asyncio.Event
) -> None:
    chunks = engine.generate(model, prompt, GenerationParams(max_tokens=2, temperature=0.0))
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            accepted.set()  # the first chunk: the engine took it in
            if chunk.tokens:
                return


# ------------------------------------------------------------ the store alone


def kv(tokens: int, width: int = 8) -> list[KVCache]:
    """A one-layer mlx-lm KV cache holding `tokens` positions."""
    cache = KVCache()
    cache.update_and_fetch(mx.zeros((1, 2, tokens, width)), mx.zeros((1, 2, tokens, width)))
    mx.eval(cache.keys, cache.values)
    return [cache]


def test_store_finds_the_longest_prefix_and_trims_a_longer_entry() -> None:
    store = PromptCache(max_bytes=1 << 30)
    store.insert("m", list(range(100)), kv(100))
    cache, cached = store.fetch("m", [*range(60), 999, 998])
    assert cached == 60 and cache is not None and cache[0].offset == 60  # trimmed copy
    cache, cached = store.fetch("m", [*range(100), 5])
    assert cached == 100
    # The whole prompt cached: one token is left for the model to take in.
    assert store.fetch("m", list(range(100)))[1] == 99
    assert store.fetch("other model", list(range(100))) == (None, 0)
    # A few shared tokens (a chat template's opening) are no hit.
    assert store.fetch("m", [*range(MIN_REUSE - 1), 999, 998]) == (None, 0)
    assert (store.lookups, store.hits, store.tokens_reused) == (5, 3, 259)


def test_store_keeps_one_budget_across_models_and_drops_a_model() -> None:
    size = sum(c.nbytes for c in kv(256))
    store = PromptCache(max_bytes=3 * size)
    store.insert("a", [1, *range(255)], kv(256))
    store.insert("b", [2, *range(255)], kv(256))
    store.insert("a", [3, *range(255)], kv(256))
    assert store.nbytes == 3 * size
    store.insert("a", [4, *range(255)], kv(256))  # over: the least recently used model gives
    assert store.nbytes == 3 * size
    assert (store.entries("a"), store.entries("b")) == (3, 0)
    assert not store.insert("a", [5, *range(511)], kv(1024))  # larger than the cap: not kept
    assert store.nbytes <= 3 * size
    store.drop("a")
    assert store.nbytes == 0 and store.fetch("a", [1, *range(255)]) == (None, 0)


def test_store_with_no_budget_keeps_nothing() -> None:
    store = PromptCache(max_bytes=0)
    assert not store.insert("m", list(range(4)), kv(4))
    assert store.fetch("m", list(range(4))) == (None, 0) and store.nbytes == 0


class Work:
    def __init__(self, **kw: float) -> None:
        self.prompt_tokens = kw.get("prompt_tokens", 0)
        self.prompt_time = kw.get("prompt_time", 0.0)
        self.generation_steps = kw.get("generation_steps", 0)
        self.decode_time = kw.get("decode_time", 0.0)


def test_pacer_slices_prefill_while_streams_decode_and_ramps_after_arrivals() -> None:
    pacer = PrefillPacer(2048)
    # Nobody decoding: full-size chunks, reached in a ramp so a burst can join.
    sizes = [pacer.chunk(decoding=False, prefilling=1, longest=3000) for _ in range(8)]
    assert sizes == [MIN_CHUNK, 64, 128, 256, 512, 1024, 2048, 2048]
    # A short prompt (a cached conversation's next turn) goes in one step.
    assert pacer.chunk(decoding=False, prefilling=2, longest=RAMP_ABOVE) == 2048
    assert pacer.chunk(decoding=True, prefilling=1) == MIN_CHUNK  # rate not known yet
    pacer.observe(Work(prompt_tokens=2000, prompt_time=1.0, generation_steps=1, decode_time=0.1))
    assert pacer.chunk(decoding=True, prefilling=1) == 200  # one decode step's worth
    assert pacer.chunk(decoding=True, prefilling=4, longest=900) == MIN_CHUNK  # ramp anew
    assert pacer.chunk(decoding=True, prefilling=4) == 50  # the slice, shared by 4
    assert pacer.chunk(decoding=True, prefilling=3) == 66
    assert pacer.chunk(decoding=True, prefilling=100, longest=900) == MIN_CHUNK
    assert pacer.chunk(decoding=False, prefilling=100, longest=900) == 64
