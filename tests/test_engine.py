"""The MLX engine: continuous batching, cancellation, stops, loading and eviction."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from pathlib import Path

import pytest

from inference.errors import BackendUnavailable, ContextLengthExceeded, ModelLoadError
from inference.local.backend import Defaults, LocalBackend
from inference.local.engine import Engine, GenerationParams
from inference.local.model import LoadedModel, ModelSpec, load_model
from inference.local.stops import StopMatcher
from inference.types import ChatRequest, Message, TextPart

PROMPT = "Write a long story about a fox who learns to sail."


def chat(text: str = PROMPT, **kw: object) -> ChatRequest:
    return ChatRequest(model="demo", messages=[Message("user", [TextPart(text)])], **kw)  # type: ignore[arg-type]


@pytest.fixture
async def engine():
    engine = Engine(max_resident_models=2)
    yield engine
    engine.close()


async def generate(
    engine: Engine, spec: ModelSpec, text: str, **params: object
) -> tuple[str, int, str | None]:
    async with engine.lease(spec) as model:
        prompt = model.encode_chat([{"role": "user", "content": text}])
        options = {"max_tokens": 32, "temperature": 0.0, **params}
        out, tokens, finish = "", 0, None
        async for chunk in engine.generate(model, prompt, GenerationParams(**options)):  # type: ignore[arg-type]
            out += chunk.text
            tokens, finish = chunk.tokens, chunk.finish_reason
        return out, tokens, finish


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller demo model. MLX's CPU matrix products cost time in proportion to
    the batch at the demo's size, so only a step's fixed cost is shared there; at
    this size that fixed cost is most of a step, and sharing it shows above the
    machine's noise (benchmarks/bench_local.py measures the demo model itself)."""
    from inference.demo_model import build_demo_model

    return build_demo_model(
        tmp_path_factory.mktemp("tiny") / "tiny", seed=0, hidden_size=64, num_layers=2
    )


async def test_concurrent_requests_share_decoding_steps(
    engine: Engine, tiny_model_path: Path
) -> None:
    spec = ModelSpec("tiny", str(tiny_model_path))
    prompts = [PROMPT, "Explain how tides work, in detail."]
    await generate(engine, spec, "warm up", max_tokens=4)

    # Best of five, interleaved: a busy machine slows single runs, not the best one.
    sequential_times, concurrent_times, step_counts = [], [], []
    for _ in range(5):
        started = time.perf_counter()
        sequential = [await generate(engine, spec, p, max_tokens=48) for p in prompts]
        sequential_times.append(time.perf_counter() - started)
        steps_before = engine.stats().decode_steps
        started = time.perf_counter()
        concurrent = await asyncio.gather(
            *[generate(engine, spec, p, max_tokens=48) for p in prompts]
        )
        concurrent_times.append(time.perf_counter() - started)
        step_counts.append(engine.stats().decode_steps - steps_before)

    tokens = sum(t for _, t, _ in concurrent)
    assert tokens == sum(t for _, t, _ in sequential)
    # Shared steps: the two sequences advanced together, not one after another.
    assert min(step_counts) < tokens * 0.75, (step_counts, tokens)
    ratio = min(concurrent_times) / min(sequential_times)
    print(f"concurrent/sequential time ratio: {ratio:.2f}")
    # The claim is "less time than one after the other"; on an idle 2-core
    # machine this ratio is about 0.6.
    assert ratio < 1.0, f"concurrent/sequential time ratio {ratio:.2f}"


async def test_prompt_is_processed_once_not_every_token(
    engine: Engine, demo_model_path: Path
) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    await generate(engine, spec, "warm up", max_tokens=2)
    before = engine.stats()
    async with engine.lease(spec) as model:
        prompt_len = len(model.encode_chat([{"role": "user", "content": PROMPT * 5}]))
    _, tokens, _ = await generate(engine, spec, PROMPT * 5, max_tokens=40)
    after = engine.stats()
    assert tokens > 10
    assert after.prompt_tokens_processed - before.prompt_tokens_processed <= prompt_len
    assert after.generated_tokens - before.generated_tokens == tokens


async def test_cancel_frees_the_slot_within_a_step(engine: Engine, demo_model_path: Path) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    async with engine.lease(spec) as model:
        prompt = model.encode_chat([{"role": "user", "content": PROMPT}])
        params = GenerationParams(max_tokens=3000, temperature=0.9, seed=1)
        stream = engine.generate(model, prompt, params)
        for _ in range(3):
            await anext(stream)
        assert engine.stats().active_sequences == 1
        steps_at_cancel = engine.stats().decode_steps
        await stream.aclose()
        deadline = time.monotonic() + 2
        while engine.stats().active_sequences and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        stats = engine.stats()
    assert stats.active_sequences == 0
    assert stats.decode_steps - steps_at_cancel <= 2


async def test_task_cancellation_also_frees_the_slot(engine: Engine, demo_model_path: Path) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    task = asyncio.create_task(
        generate(engine, spec, PROMPT, max_tokens=3000, temperature=1.0, seed=2)
    )
    while engine.stats().generated_tokens < 5:
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 2
    while engine.stats().active_sequences and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert engine.stats().active_sequences == 0


async def test_stop_strings_cut_the_text(engine: Engine, demo_model_path: Path) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    text, _, _ = await generate(engine, spec, PROMPT, max_tokens=40)
    stop = text[10:13]
    cut, _, finish = await generate(engine, spec, PROMPT, max_tokens=40, stop=(stop,))
    assert finish == "stop_sequence"
    assert cut == text[: text.index(stop)]


async def test_max_tokens_and_seeds_per_request(engine: Engine, demo_model_path: Path) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    results = await asyncio.gather(
        generate(engine, spec, PROMPT, max_tokens=3, temperature=1.0, seed=5),
        generate(engine, spec, PROMPT, max_tokens=9, temperature=1.0, seed=5),
        generate(engine, spec, PROMPT, max_tokens=9, temperature=1.0, seed=6),
    )
    (a, na, fa), (b, nb, _), (c, _, _) = results
    assert (na, fa) == (3, "length") or fa == "stop"
    assert nb <= 9
    # Same seed, same start, whatever shares the batch; another seed differs.
    assert b.startswith(a[: len(a) // 2])
    assert b != c
    # And the same text alone as in a batch: a seed is the request's own.
    alone = await generate(engine, spec, PROMPT, max_tokens=9, temperature=1.0, seed=5)
    assert alone[0] == b


async def test_any_int64_seed_and_top_p_zero(engine: Engine, demo_model_path: Path) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    for seed in (-1, -(2**63), 2**63 - 1):  # OpenAI's seed is any int64
        _, tokens, _ = await generate(
            engine, spec, PROMPT, max_tokens=4, temperature=1.0, seed=seed
        )
        assert tokens == 4
    greedy, _, _ = await generate(engine, spec, PROMPT, max_tokens=12)
    no_mass, _, _ = await generate(
        engine, spec, PROMPT, max_tokens=12, temperature=1.5, top_p=0.0, seed=9
    )
    assert no_mass == greedy  # top_p 0 leaves only the most likely token


async def test_a_request_joins_a_batch_in_flight(engine: Engine, demo_model_path: Path) -> None:
    """The newcomer's prompt is prefilled alone; the running sequence goes on unchanged."""
    spec = ModelSpec("demo", str(demo_model_path))
    long_alone, _, _ = await generate(engine, spec, PROMPT, max_tokens=60)
    async with engine.lease(spec) as model:
        newcomer = model.encode_chat([{"role": "user", "content": "Explain tides."}])
        first = engine.generate(
            model, model.encode_chat([{"role": "user", "content": PROMPT}]),
            GenerationParams(max_tokens=60, temperature=0.0),
        )  # fmt: skip
        chunk = await anext(first)  # its acceptance: nothing generated yet
        text = chunk.text
        while chunk.tokens < 20:
            chunk = await anext(first)
            text += chunk.text
        before = engine.stats()
        joined, _, _ = await generate(engine, spec, "Explain tides.", max_tokens=8)
        during = engine.stats()
        async for chunk in first:
            text += chunk.text
    assert during.active_sequences >= 1  # the first was still running when the newcomer ended
    # Only the newcomer's prompt (mlx-lm feeds its last token with the first step),
    # less the chat template's opening it shares with the first, taken from the cache.
    prefilled = during.prompt_tokens_processed - before.prompt_tokens_processed
    reused = during.prompt_cache_tokens_reused - before.prompt_cache_tokens_reused
    assert len(newcomer) - 1 <= prefilled + reused <= len(newcomer)
    assert text == long_alone  # greedy: the same text as when it ran alone
    assert joined == (await generate(engine, spec, "Explain tides.", max_tokens=8))[0]


def test_stop_matcher_holds_back_partial_matches() -> None:
    matcher = StopMatcher(["</end>", "STOP"])
    assert matcher.feed("hello </e") == ("hello ", None)
    assert matcher.feed("nd") == ("", None)
    assert matcher.feed("> tail") == ("", "</end>")
    other = StopMatcher(["ab"])
    assert other.feed("xa") == ("x", None)
    assert other.feed("c") == ("ac", None)
    assert other.flush() == ""
    assert StopMatcher([]).feed("anything") == ("anything", None)


async def test_one_load_per_model_and_failures_reach_every_waiter(
    tmp_path: Path, demo_model_path: Path
) -> None:
    calls: list[str] = []
    gate = threading.Event()

    def slow_loader(spec: ModelSpec) -> LoadedModel:
        calls.append(spec.name)
        gate.wait(5)
        return load_model(spec)

    engine = Engine(max_resident_models=2, loader=slow_loader)
    broken = ModelSpec("broken", str(tmp_path / "empty"))
    try:
        waiters = [asyncio.create_task(_lease_once(engine, broken)) for _ in range(3)]
        # One turn of the loop: each waiter has joined the load (synchronously, in
        # its first step); then the loader is held until all of them wait on it.
        await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        while calls != ["broken"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert calls == ["broken"]
        assert all(isinstance(r, ModelLoadError) for r in results)
        assert "broken" in str(results[0])
        assert "broken" in engine.stats().failed_models  # what the admin shows
        # Failure is not sticky: once the folder exists, the next request loads it.
        shutil.copytree(demo_model_path, tmp_path / "empty")
        assert await _lease_once(engine, broken) == "broken"
        assert calls == ["broken", "broken"]
        assert engine.stats().failed_models == {}
    finally:
        engine.close()


async def _lease_once(engine: Engine, spec: ModelSpec) -> str:
    async with engine.lease(spec) as model:
        return model.spec.name


async def test_lru_eviction_never_evicts_a_model_in_use(demo_model_path: Path) -> None:
    engine = Engine(max_resident_models=1, slot_wait_seconds=0.3)
    a, b = (ModelSpec(n, str(demo_model_path)) for n in ("a", "b"))
    try:
        async with engine.lease(a):
            with pytest.raises(BackendUnavailable):
                await _lease_once(engine, b)
            assert engine.stats().resident_models == ["a"]
        assert await _lease_once(engine, b) == "b"
        assert engine.stats().resident_models == ["b"]

        # Waiting works too: b is held until a waits for a slot, then a gets it.
        release = asyncio.Event()

        async def hold_b() -> None:
            async with engine.lease(b):
                await release.wait()

        holder = asyncio.create_task(hold_b())
        await asyncio.sleep(0)  # b is leased (in the holder's first step)
        waiting = asyncio.create_task(_lease_once(engine, a))
        await asyncio.sleep(0)  # a found no free slot and waits
        assert not waiting.done()
        release.set()
        assert await waiting == "a"
        await holder
        assert engine.stats().resident_models == ["a"]
    finally:
        engine.close()


async def test_a_model_just_loaded_is_not_evicted_before_its_waiter_uses_it(
    demo_model_path: Path,
) -> None:
    """Between a load's end and its waiter taking a lease the model holds no lease:
    another request must not evict it then, or loads undo each other."""
    engine = Engine(max_resident_models=1, slot_wait_seconds=0.3)
    a, b = (ModelSpec(n, str(demo_model_path)) for n in ("a", "b"))
    try:
        loading = engine.preload(a)  # loaded with nobody holding it yet
        assert loading is not None
        await asyncio.wrap_future(loading)
        with pytest.raises(BackendUnavailable):
            await _lease_once(engine, b)  # a is fresh: b waits, and here gives up
        assert engine.stats().resident_models == ["a"]
        assert await _lease_once(engine, a) == "a"  # its waiter takes it ...
        assert await _lease_once(engine, b) == "b"  # ... and then it may go
    finally:
        engine.close()


async def test_backend_honours_temperature_zero_over_defaults(
    engine: Engine, demo_model_path: Path
) -> None:
    spec = ModelSpec("demo", str(demo_model_path))
    hot = LocalBackend(engine, spec, Defaults(max_tokens=16, temperature=1.8))
    greedy = [await hot.complete(chat(temperature=0.0, max_tokens=16)) for _ in range(2)]
    assert greedy[0].content == greedy[1].content
    sampled = {str((await hot.complete(chat(max_tokens=16))).content) for _ in range(3)}
    assert len(sampled) > 1  # no temperature given: the model's default (1.8) applies
    usage = greedy[0].finish.usage
    assert usage.input_tokens == await hot.count_tokens(chat())
    assert 0 < usage.output_tokens <= 16


async def test_backend_rejects_prompts_over_the_context(
    engine: Engine, demo_model_path: Path
) -> None:
    backend = LocalBackend(engine, ModelSpec("demo", str(demo_model_path), context_length=64))
    with pytest.raises(ContextLengthExceeded):
        await backend.complete(chat(PROMPT * 20))
