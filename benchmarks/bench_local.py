"""Local-model throughput and latency: the gateway against mlx-lm on the same model.

Run from the repository root:

    .venv/bin/python benchmarks/bench_local.py [--hidden-size 512 --layers 8 --tokens 256]

It builds one random-weight demo model in a temporary data dir and measures
(a) single-stream decode tokens/s through the gateway against mlx-lm's
    `stream_generate` in this process (goal: ratio >= 0.9);
(b) aggregate generated tokens/s at 1, 4 and 8 concurrent streams against
    `mlx_lm.server` on the same folder (goal: ratio >= 1.0);
(c) p50/p99 of `GET /v1/models` on the gateway while 8 streams generate
    (goal: p99 < 50 ms).
Only loopback addresses are used and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ServerProcess,
    gateway_server,
    install_cleanup,
    mlx_lm_server,
    prepare_gateway_data,
    progress,
    sample_latency,
)
from load import (
    BodyFactory,
    LatencyResult,
    LoadResult,
    concurrent_load,
    latency_under_load,
)

# Varied topics, each prompt led by a nonce unique to its phase, stream and
# round: mlx_lm.server reuses cached KV for a shared prompt prefix and the
# gateway has no prompt cache, so shared prefixes would measure that instead of
# decoding and batching. Greedy decoding of the demo model mostly runs to
# max_tokens on these (finish reasons and token counts are printed to check).
TOPICS = (
    "Tell me a story about a lighthouse.",
    "Write a long essay about the history of the sea.",
    "Explain how ships navigate at night.",
    "Describe a storm over the harbour in detail.",
    "List everything a keeper does in a day.",
    "Write a poem about the moon and tides.",
    "What is the weather like in the mountains?",
    "Summarise the book in many words.",
)


def messages(index: int, tag: str) -> list[dict[str, str]]:
    # A hash, not the tag itself: tags share leading characters ("load-c4-r0-1"),
    # which mlx_lm.server's prefix cache would reuse.
    nonce = hashlib.sha1(tag.encode()).hexdigest()[:8]
    return [{"role": "user", "content": f"{nonce} {TOPICS[index % len(TOPICS)]}"}]


def bodies(model: str, tag: str, max_tokens: int) -> BodyFactory:
    def make(index: int, round_: int) -> dict[str, Any]:
        # No seed: mlx_lm.server serves seeded requests one at a time, unbatched.
        return {
            "model": model,
            "messages": messages(index, f"{tag}-{index}-{round_}"),
            "max_tokens": max_tokens,
            "temperature": 0,
        }

    return make


class Direct:
    """mlx-lm's own `stream_generate` on the model, in this process: the (a) baseline."""

    def __init__(self, model_dir: Path) -> None:
        from mlx_lm import load
        from mlx_lm.sample_utils import make_sampler

        self.model, self.tokenizer = load(str(model_dir))
        self.sampler = make_sampler(0.0)
        self.decode(messages(0, "warm-up"), 8)  # first-call allocations stay out of the figures

    def decode(self, chat: list[dict[str, str]], tokens: int) -> tuple[int, int, float]:
        """Tokens generated, how many had text, and tokens/s from the first to the last."""
        from mlx_lm import stream_generate

        prompt = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        first = last = 0.0
        count = with_text = 0
        for response in stream_generate(
            self.model, self.tokenizer, prompt, max_tokens=tokens, sampler=self.sampler
        ):
            last = time.perf_counter()
            if count == 0:
                first = last
            count += 1
            with_text += bool(response.text)
        return count, with_text, (count - 1) / (last - first) if last > first else math.nan

    def close(self) -> None:
        import mlx.core as mx

        del self.model, self.tokenizer
        gc.collect()
        mx.clear_cache()


@dataclass(frozen=True)
class Target:
    label: str
    server: ServerProcess
    model: str  # the name to put in requests

    @property
    def url(self) -> str:
        return self.server.url


def engine_stats(url: str) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        return dict(client.get(f"{url}/health").json().get("engine") or {})


def wait_engine_idle(url: str, timeout_s: float) -> float | None:
    """Seconds until the gateway has no active sequence, or None if it never got there."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if engine_stats(url).get("active_sequences", 0) == 0:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


@dataclass
class Figures:
    direct: list[float] = field(default_factory=list)
    single: list[float] = field(default_factory=list)
    load: dict[str, dict[int, list[LoadResult]]] = field(default_factory=dict)
    busy: dict[str, LatencyResult] = field(default_factory=dict)
    idle: LatencyResult | None = None

    def best_load(self, label: str, concurrency: int) -> LoadResult:
        return max(self.load[label][concurrency], key=lambda r: r.tps)

    def single_decode(self, label: str) -> float:
        """Best decode tok/s of (b)'s single streams that printed on nearly every token."""
        # Timing spans text chunks only; a stream of mostly silent tokens would
        # count tokens over a window that misses many of them.
        streams = [s for r in self.load[label][1] for s in r.streams]
        rates = [s.decode_tps for s in streams if s.content_chunks >= 0.95 * s.tokens]
        return max(rates, default=math.nan)


class Bench:
    """The phases; runs of the two sides alternate so that background load on a
    shared machine hits both alike, and the best run of each side is kept."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.figures = Figures()

    def single_stream(self, direct: Direct, gateway: Target) -> None:
        a = self.args
        progress(f"(a) single stream, {a.tokens} tokens, direct and gateway x {a.repeats}")
        # The gateway's side is timed on chunks with text, so the prompt must make
        # every token print something: the random model can loop on a special
        # token, which prints nothing. The direct runs check that, as they go.
        for candidate in range(4):
            # Round 0 of stream 0 every time: the gateway gets the same messages.
            body = bodies(gateway.model, f"single-{candidate}", a.tokens)(0, 0)
            count, with_text, rate = direct.decode(body["messages"], a.tokens)
            if with_text >= 0.98 * count and count >= 0.9 * a.tokens:
                break
            progress(f"  prompt {candidate}: {count} tokens, {with_text} with text; next one")
        for run in range(a.repeats):
            if run > 0:
                count, with_text, rate = direct.decode(body["messages"], a.tokens)
            self.figures.direct.append(rate)
            progress(
                f"  direct  run {run + 1}: {count} tokens ({with_text} with text), {rate:.1f} tok/s"
            )
            result = asyncio.run(concurrent_load(gateway.url, 1, 1, lambda i, r: body)).streams[0]
            self.figures.single.append(result.decode_tps)
            progress(
                f"  gateway run {run + 1}: {result.tokens} tokens ({result.content_chunks} chunks, "
                f"{result.finish_reason}), {result.decode_tps:.1f} tok/s"
            )

    def concurrent(self, targets: list[Target]) -> None:
        a = self.args
        for c in a.concurrency:
            progress(f"(b) {c} concurrent stream(s) x {a.load_tokens} tokens x {a.load_repeats}")
            for run in range(a.load_repeats):
                for target in targets if run % 2 == 0 else targets[::-1]:
                    # A fresh tag per run: no prompt is ever served twice.
                    make = bodies(target.model, f"load-c{c}-r{run}", a.load_tokens)
                    before = engine_stats(target.url) if target.label == "gateway" else None
                    result = asyncio.run(concurrent_load(target.url, c, a.rounds, make))
                    self.figures.load.setdefault(target.label, {}).setdefault(c, []).append(result)
                    progress(f"  {target.label}: {result.describe()}")
                    if before is not None:
                        after = engine_stats(target.url)
                        steps = after["decode_steps"] - before["decode_steps"]
                        made = after["generated_tokens"] - before["generated_tokens"]
                        progress(
                            f"    engine: {steps} steps, {made / max(steps, 1):.2f} tokens/step"
                        )

    def idle_latency(self, target: Target) -> None:
        a = self.args
        progress(f"(c) {target.label} GET /v1/models idle x {a.idle_requests}")
        idle = LatencyResult(
            sample_latency(
                target.url + "/v1/models",
                count=a.idle_requests,
                interval_s=a.interval_ms / 1e3,
                time_limit_s=60.0,
            )
        )
        self.figures.idle = idle
        progress(f"  idle p50 {idle.ms(50):.1f} ms, p99 {idle.ms(99):.1f} ms")

    def busy_latency(self, target: Target) -> None:
        a = self.args
        progress(f"(c) {target.label} GET /v1/models under {a.busy_streams} streams x {a.requests}")
        make = bodies(target.model, "busy", a.busy_tokens)
        result = asyncio.run(
            latency_under_load(
                target.url, "/v1/models", a.busy_streams, a.requests, a.interval_ms / 1e3, make
            )
        )
        self.figures.busy[target.label] = result
        note = " (a stream ended before sampling finished)" if result.streams_ended_early else ""
        progress(
            f"  {len(result.latencies)} samples: p50 {result.ms(50):.1f} ms, "
            f"p99 {result.ms(99):.1f} ms, max {max(result.latencies) * 1e3:.1f} ms{note}"
        )
        if target.label == "gateway":
            drained = wait_engine_idle(target.url, 60.0)
            if drained is None:
                progress("  note: gateway still generating 60s after its clients disconnected")
            else:
                progress(f"  engine idle {drained:.1f}s after the clients disconnected")

    def run(self, model_dir: Path, data_dir: Path) -> None:
        progress("(a) loading the model in-process for the direct baseline")
        direct = Direct(model_dir)
        gateway = Target("gateway", gateway_server(data_dir), "demo")
        # "default_model" is mlx_lm.server's name for its --model.
        mlx = Target("mlx_lm.server", mlx_lm_server(model_dir, data_dir), "default_model")
        try:
            for target in (gateway, mlx):
                progress(f"starting {target.label} on {target.url} ({target.server.log_path})")
                target.server.start()
                # The gateway loads models lazily: the warm-up pays for the load.
                asyncio.run(concurrent_load(target.url, 1, 1, bodies(target.model, "warm-up", 8)))
            self.single_stream(direct, gateway)
            direct.close()
            self.concurrent([gateway, mlx])
            self.idle_latency(gateway)
            self.busy_latency(gateway)
            self.busy_latency(mlx)
        finally:
            mlx.server.stop()
            gateway.server.stop()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def summary(args: argparse.Namespace, f: Figures) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    gw, direct = max(f.single), max(f.direct)
    ratio = gw / direct
    rows.append(
        ("(a) decode tok/s, 1 stream", f"{gw:.1f}", f"{direct:.1f} direct", f"{ratio:.2f}",
         ">= 0.90", verdict(ratio >= 0.9))
    )  # fmt: skip
    for c in args.concurrency:
        g, m = f.best_load("gateway", c).tps, f.best_load("mlx_lm.server", c).tps
        rows.append(
            (f"(b) aggregate tok/s, {c} stream{'s' * (c > 1)}", f"{g:.1f}",
             f"{m:.1f} mlx_lm.server", f"{g / m:.2f}", ">= 1.00", verdict(g / m >= 1.0))
        )  # fmt: skip
    if 1 in args.concurrency:
        g1, m1 = f.single_decode("gateway"), f.single_decode("mlx_lm.server")
        rows.append(
            ("    decode tok/s in (b), 1 stream", f"{g1:.1f}", f"{m1:.1f} mlx_lm.server",
             f"{g1 / m1:.2f}", "-", "info")
        )  # fmt: skip
    busy, idle, mlx_busy = f.busy["gateway"], f.idle, f.busy["mlx_lm.server"]
    assert idle is not None
    n = args.busy_streams
    rows.append(
        (f"(c) /v1/models p50 ms, {n} streams", f"{busy.ms(50):.1f}",
         f"{idle.ms(50):.1f} idle, {mlx_busy.ms(50):.1f} mlx_lm", "-", "-", "info")
    )  # fmt: skip
    rows.append(
        (f"(c) /v1/models p99 ms, {n} streams", f"{busy.ms(99):.1f}",
         f"{idle.ms(99):.1f} idle, {mlx_busy.ms(99):.1f} mlx_lm", f"{busy.ms(99) / 50:.2f} of 50",
         "< 50 ms", verdict(busy.ms(99) < 50))
    )  # fmt: skip
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("figure", "gateway", "baseline", "ratio", "goal", "result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    print(rule)
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if row is header:
            print(rule)
    print(rule, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0, help="model weights seed")
    p.add_argument("--tokens", type=int, default=256, help="max_tokens for (a)")
    p.add_argument("--repeats", type=int, default=2, help="runs of (a); the best is kept")
    p.add_argument("--load-tokens", type=int, default=128, help="max_tokens per stream in (b)")
    p.add_argument("--load-repeats", type=int, default=2, help="runs of (b); the best is kept")
    p.add_argument("--rounds", type=int, default=1, help="requests per stream in (b)")
    p.add_argument("--concurrency", default="1,4,8", help="stream counts for (b)")
    p.add_argument("--requests", type=int, default=200, help="GET /v1/models samples in (c)")
    p.add_argument("--idle-requests", type=int, default=50)
    p.add_argument("--interval-ms", type=float, default=5.0, help="pause between (c) samples")
    p.add_argument("--busy-streams", type=int, default=8)
    p.add_argument("--busy-tokens", type=int, default=1024, help="max_tokens of (c)'s streams")
    p.add_argument("--quick", action="store_true", help="fewer tokens and samples")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir and logs")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if args.quick:
        args.tokens, args.load_tokens, args.repeats, args.load_repeats = 64, 32, 1, 1
        args.requests, args.idle_requests = 50, 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_cleanup()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-local-"))
    bench = Bench(args)
    ok = False
    try:
        # Other work on a small machine skews every figure here: say how busy it was.
        progress(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        progress(
            f"building demo model: hidden {args.hidden_size}, {args.layers} layers, "
            f"vocab {args.vocab_size}, seed {args.seed} in {data_dir}"
        )
        model_dir = prepare_gateway_data(
            data_dir, hidden_size=args.hidden_size, layers=args.layers,
            vocab_size=args.vocab_size, seed=args.seed,
        )  # fmt: skip
        bench.run(model_dir, data_dir)
        progress(f"done; load average {os.getloadavg()[0]:.2f}")
        print_table(summary(args, bench.figures))
        ok = True
    except KeyboardInterrupt:
        progress("interrupted")
    finally:
        if args.keep or not ok:
            print(f"data dir and server logs kept in {data_dir}", flush=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
