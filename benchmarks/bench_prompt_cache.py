"""Prompt (prefix) cache: the gateway against mlx_lm.server on the same model folder.

Run from the repository root:

    .venv/bin/python benchmarks/bench_prompt_cache.py [--system-words 1500 --layers 8]

Both servers serve one random-weight demo model folder; requests are streamed,
greedy, `--tokens` tokens per answer. It measures
(1) one conversation of `--turns` turns led by a `--system-words`-word system
    prompt: time to first token per turn and the whole conversation's time. The
    two servers' turns alternate, so background load hits both alike.
    Goals: turns 2.. time to first token <= 1.0x mlx_lm.server's, whole <= 1.0x.
(2) `--conversations` concurrent conversations sharing that system prompt, each
    of `--turns` turns: aggregate generated tokens/s. Goal: >= 1.0x.
(3) a running stream's tokens/s while a `--long-prompt`-token prompt is
    prefilled, against its own rate just before (info: mlx_lm.server prefills
    in 2,048-token blocks between decode steps; the gateway in slices).
All along, the gateway's prompt-cache bytes are read from /health every 0.1 s:
their maximum must stay within its cap (`--cache-mib`, default the gateway's
own default, a quarter of RAM).
On a small shared CPU, `--system-words 300 --hidden-size 256 --layers 4` keeps a
run to a few minutes; the README's table says which parameters it used.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_local import Target, print_table, verdict
from common import (
    ROOT,
    StreamResult,
    async_client,
    gateway_server,
    install_cleanup,
    mlx_lm_server,
    prepare_gateway_data,
    progress,
    stream_chat,
)

CORPUS = (ROOT / "inference" / "demo_corpus.txt").read_text().split()


def text(words: int, tag: str) -> str:
    """`words` words of the demo corpus, led by a nonce: a tag's text shares no
    prefix with another tag's (beyond the chat template's opening)."""
    nonce = hashlib.sha1(tag.encode()).hexdigest()[:8]
    return f"{nonce} " + " ".join(itertools.islice(itertools.cycle(CORPUS), words))


def chat(target: Target, messages: list[dict[str, str]], tokens: int) -> dict[str, Any]:
    return {"model": target.model, "messages": messages, "max_tokens": tokens, "temperature": 0}


@dataclass
class Conversation:
    """One conversation's turns on one server."""

    turns: list[StreamResult] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(t.ended - t.started for t in self.turns)

    def ttft(self, turn: int) -> float:
        first = self.turns[turn].first
        return (first if first is not None else self.turns[turn].ended) - self.turns[turn].started


async def converse(
    client: httpx.AsyncClient, target: Target, system: str, asks: list[str], tokens: int
) -> Conversation:
    conversation = Conversation()
    history = [{"role": "system", "content": system}]
    for ask in asks:
        history.append({"role": "user", "content": ask})
        result = await stream_chat(client, target.url, chat(target, history, tokens))
        conversation.turns.append(result)
        history.append({"role": "assistant", "content": result.text})
    return conversation


def asks(turns: int, tag: str) -> list[str]:
    return [f"{tag} question {i + 1}: " + text(12, f"{tag}-{i}") for i in range(turns)]


class CacheWatch:
    """The gateway's prompt-cache bytes, read from /health every 0.1 s in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self.cap = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CacheWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while not self._stop.wait(0.1):
                engine = client.get(f"{self.url}/health").json().get("engine") or {}
                self.peak = max(self.peak, int(engine.get("prompt_cache_bytes", 0)))
                self.cap = int(engine.get("prompt_cache_max_bytes", 0))
                self.samples += 1


@dataclass
class Interleave:
    """(3): a running stream's decode rate around a long prompt's prefill."""

    before_tps: float
    during_tps: float
    prefill_seconds: float
    longest_pause: float  # between two of its chunks while the prompt was prefilled


async def interleave(
    client: httpx.AsyncClient, target: Target, long_prompt: str, tag: str
) -> Interleave:
    """Rates are measured in characters and turned into tokens with the stream's
    own characters per token (a greedy rerun of its start reports both): a
    server may send several tokens in one chunk, so chunks are no measure."""
    running_body = chat(target, [{"role": "user", "content": text(20, tag)}], 3000)
    sample = await stream_chat(client, target.url, {**running_body, "max_tokens": 200})
    per_token = len(sample.text) / sample.tokens
    seen: list[tuple[float, int]] = []
    enough = asyncio.Event()

    def note(now: float, content: str) -> None:
        seen.append((now, len(content)))
        if len(seen) >= 40:
            enough.set()

    running = asyncio.create_task(stream_chat(client, target.url, running_body, on_chunk=note))
    await enough.wait()
    submitted = time.perf_counter()
    newcomer = await stream_chat(
        client, target.url, chat(target, [{"role": "user", "content": long_prompt}], 1)
    )
    done = newcomer.first if newcomer.first is not None else newcomer.ended
    running.cancel()
    before = [(t, n) for t, n in seen if t <= submitted][10:]  # past the start-up
    before_chars = sum(n for _, n in before[1:]) / (before[-1][0] - before[0][0])
    during_chars = sum(n for t, n in seen if submitted < t <= done) / (done - submitted)
    marks = [submitted, *(t for t, _ in seen if submitted < t <= done), done]
    pause = max(b - a for a, b in itertools.pairwise(marks))
    return Interleave(before_chars / per_token, during_chars / per_token, done - submitted, pause)


async def long_prompt_of(gateway: Target, tokens: int, tag: str) -> str:
    """A user message of about `tokens` prompt tokens (the gateway counts exactly)."""
    words = tokens // 2
    async with async_client() as client:
        for _ in range(6):
            body = {
                "model": gateway.model,
                "messages": [{"role": "user", "content": text(words, tag)}],
            }
            counted = (
                await client.post(f"{gateway.url}/v1/messages/count_tokens", json=body)
            ).json()["input_tokens"]
            if abs(counted - tokens) <= tokens // 50:
                break
            words = max(1, round(words * tokens / counted))
    return text(words, tag)


class Bench:
    def __init__(self, args: argparse.Namespace, gateway: Target, mlx: Target) -> None:
        self.args = args
        self.gateway, self.mlx = gateway, mlx
        self.one: dict[str, list[Conversation]] = {}  # label: one per repeat
        self.many: dict[str, tuple[float, int]] = {}  # label: (seconds, tokens)
        self.hits: dict[str, list[int | None]] = {}
        self.interleave: dict[str, Interleave] = {}

    async def run(self) -> None:
        async with async_client() as client:
            for target in (self.gateway, self.mlx):  # the gateway loads its model lazily
                hello = [{"role": "user", "content": "hi"}]
                await stream_chat(client, target.url, chat(target, hello, 2))
            if 1 in self.args.phases:
                await self.one_conversation(client)
            if 2 in self.args.phases:
                await self.shared_prefix(client)
            if 3 in self.args.phases:
                await self.long_prefill(client)

    async def one_conversation(self, client: httpx.AsyncClient) -> None:
        a, targets = self.args, (self.gateway, self.mlx)
        progress(
            f"(1) one conversation, {a.turns} turns, {a.system_words}-word system prompt, "
            f"x {a.repeats} (a new conversation each time; the best of each side is kept)"
        )
        for run in range(a.repeats):
            system = text(a.system_words, f"one-{run}")
            conversations = {t.label: Conversation() for t in targets}
            histories = {t.label: [{"role": "system", "content": system}] for t in targets}
            for i, ask in enumerate(asks(a.turns, f"one-{run}")):
                for target in targets:
                    history = histories[target.label]
                    history.append({"role": "user", "content": ask})
                    body = chat(target, history, a.tokens)
                    result = await stream_chat(client, target.url, body)
                    history.append({"role": "assistant", "content": result.text})
                    conversations[target.label].turns.append(result)
                    progress(
                        f"  run {run + 1} turn {i + 1} {target.label}: first token "
                        f"{conversations[target.label].ttft(i):.2f}s, "
                        f"cached {result.cached_tokens}"
                    )
            for label, conversation in conversations.items():
                self.one.setdefault(label, []).append(conversation)
        first = {label: runs[0] for label, runs in self.one.items()}
        self.hits = {k: [t.cached_tokens for t in c.turns] for k, c in first.items()}

    async def shared_prefix(self, client: httpx.AsyncClient) -> None:
        a, n = self.args, self.args.conversations
        progress(f"(2) {n} concurrent conversations sharing a system prompt, {a.turns} turns each")
        shared = text(a.system_words, "many")
        for target in (self.gateway, self.mlx):
            started = time.perf_counter()
            runs = await asyncio.gather(
                *(converse(client, target, shared, asks(a.turns, f"many-{c}"), a.tokens)
                  for c in range(n))
            )  # fmt: skip
            seconds = time.perf_counter() - started
            tokens = sum(t.tokens for r in runs for t in r.turns)
            self.many[target.label] = (seconds, tokens)
            firsts = [r.ttft(0) for r in runs]
            later = [r.ttft(i) for r in runs for i in range(1, a.turns)]
            cached = [[t.cached_tokens for t in r.turns] for r in runs]
            progress(
                f"  {target.label}: {tokens} tokens in {seconds:.1f}s; first token: turn 1 "
                f"{min(firsts):.1f}-{max(firsts):.1f}s, later turns mean "
                f"{sum(later) / max(1, len(later)):.2f}s; cached {cached}"
            )

    async def long_prefill(self, client: httpx.AsyncClient) -> None:
        a = self.args
        progress(f"(3) a running stream while a {a.long_prompt}-token prompt is prefilled")
        for target in (self.gateway, self.mlx):
            long_prompt = await long_prompt_of(self.gateway, a.long_prompt, f"long-{target.label}")
            result = self.interleave[target.label] = await interleave(
                client, target, long_prompt, f"running-{target.label}"
            )
            progress(
                f"  {target.label}: {result.before_tps:.1f} tok/s before, "
                f"{result.during_tps:.1f} during {result.prefill_seconds:.1f}s of prefill, "
                f"longest pause {result.longest_pause:.2f}s"
            )


def summary(bench: Bench, watch: CacheWatch) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if bench.one:
        rows += one_rows(bench)
    if bench.many:
        (gs, gt), (ms, mt) = bench.many["gateway"], bench.many["mlx_lm.server"]
        gtps, mtps = gt / gs, mt / ms
        rows.append(
            (f"(2) aggregate tok/s, {bench.args.conversations} conversations", f"{gtps:.1f}",
             f"{mtps:.1f} mlx_lm.server", f"{gtps / mtps:.2f}", ">= 1.00",
             verdict(gtps >= mtps))
        )  # fmt: skip
    for label, r in bench.interleave.items():
        rows.append(
            (f"(3) {label}: decode tok/s during a {bench.args.long_prompt}-token prefill",
             f"{r.during_tps:.1f}", f"{r.before_tps:.1f} before it",
             f"{r.during_tps / r.before_tps:.2f}", "-", "info")
        )  # fmt: skip
        rows.append(
            (f"(3) {label}: longest pause in its stream, s", f"{r.longest_pause:.2f}",
             f"{r.prefill_seconds:.1f} prefill", "-", "-", "info")
        )  # fmt: skip
    mib = 1 << 20
    rows.append(
        (f"prompt cache peak MiB ({watch.samples} samples)", f"{watch.peak / mib:.1f}",
         f"{watch.cap / mib:.1f} cap", f"{watch.peak / max(1, watch.cap):.2f}", "<= 1.00",
         verdict(watch.peak <= watch.cap))
    )  # fmt: skip
    return rows


def one_rows(bench: Bench) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    g, m = bench.one["gateway"], bench.one["mlx_lm.server"]
    for i in range(bench.args.turns):
        gt, mt = min(c.ttft(i) for c in g), min(c.ttft(i) for c in m)
        rows.append(
            (f"(1) turn {i + 1} first token s (cached {bench.hits['gateway'][i]}"
             f" / {bench.hits['mlx_lm.server'][i]})", f"{gt:.2f}",
             f"{mt:.2f} mlx_lm.server", f"{gt / mt:.2f}", "<= 1.00" if i else "-",
             verdict(gt <= mt) if i else "info")
        )  # fmt: skip
    gs, ms = min(c.seconds for c in g), min(c.seconds for c in m)
    rows.append(
        ("(1) whole conversation s", f"{gs:.1f}", f"{ms:.1f} mlx_lm.server",
         f"{gs / ms:.2f}", "<= 1.00", verdict(gs <= ms))
    )  # fmt: skip
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0, help="model weights seed")
    p.add_argument("--system-words", type=int, default=1500)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2, help="conversations in (1); best kept")
    p.add_argument("--tokens", type=int, default=16, help="max_tokens per answer")
    p.add_argument("--conversations", type=int, default=4, help="concurrent ones in (2)")
    p.add_argument("--long-prompt", type=int, default=3000, help="prompt tokens in (3)")
    p.add_argument("--cache-mib", type=int, default=None, help="GATEWAY_PROMPT_CACHE_BYTES")
    p.add_argument("--phases", default="1,2,3", help="which of (1), (2), (3) to run")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir and logs")
    args = p.parse_args(argv)
    args.phases = {int(x) for x in str(args.phases).split(",") if x.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_cleanup()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-prompt-cache-"))
    ok = False
    try:
        progress(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        progress(f"building demo model: hidden {args.hidden_size}, {args.layers} layers")
        model_dir = prepare_gateway_data(
            data_dir, hidden_size=args.hidden_size, layers=args.layers,
            vocab_size=args.vocab_size, seed=args.seed,
        )  # fmt: skip
        env = (
            {}
            if args.cache_mib is None
            else {"GATEWAY_PROMPT_CACHE_BYTES": str(args.cache_mib << 20)}
        )
        gateway = Target("gateway", gateway_server(data_dir, **env), "demo")
        mlx = Target("mlx_lm.server", mlx_lm_server(model_dir, data_dir), "default_model")
        try:
            for target in (gateway, mlx):
                progress(f"starting {target.label} on {target.url}")
                target.server.start()
            bench = Bench(args, gateway, mlx)
            with CacheWatch(gateway.url) as watch:
                asyncio.run(bench.run())
        finally:
            mlx.server.stop()
            gateway.server.stop()
        progress(f"done; load average {os.getloadavg()[0]:.2f}")
        print_table(summary(bench, watch))
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
