"""A local model served through a model server against the same model in-process.

    .venv/bin/python benchmarks/bench_model_server.py [--hidden-size 512 --layers 8
                                                       --tokens 256 --runs 8]

One data dir with a random-weight demo model; two processes on it: a model
server (the gateway with GATEWAY_MODEL_SERVER_KEY, as `manage.py serve_models`
starts it) and a front gateway where `demo` is the model in its own process and
`remote-demo` the same model reached through the model server (a provider of
kind model-server). Streams to both, interleaved, greedy, through the same
front gateway, so the only difference is the hop. Printed: decode tokens/s
(after the first token) and time to first token, medians and p90, and the
ratio / added time. Goals: decode ratio >= 0.9, added TTFT <= 5 ms.
Only loopback addresses are used and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ServerProcess,
    async_client,
    gateway_server,
    install_cleanup,
    manage,
    percentile,
    prepare_gateway_data,
    stream_chat,
)
from common import progress as say

KEY = "ms-bench-" + "k" * 32
GOAL_RATIO, GOAL_TTFT_MS = 0.9, 5.0
_ROUTE = """
import json, os
from routing.models import BackendMapping, CloudCredential, MappingTarget, Provider
spec = json.loads(os.environ["SPEC"])
provider = Provider.objects.create(name="ms", kind="model-server", base_url=spec["url"],
                                   max_retries=0)
cred = CloudCredential(provider=provider)
cred.set_key(spec["key"])
cred.save()
mapping = BackendMapping.objects.create(pattern="remote-demo")
MappingTarget.objects.create(mapping=mapping, position=0, provider=provider, upstream_model="demo")
"""


async def measure(url: str, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """(time to first token in s, decode tokens/s) per run, per model, interleaved."""
    out: dict[str, list[tuple[float, float]]] = {"demo": [], "remote-demo": []}
    async with async_client() as client:
        for run in range(-1, args.runs):  # run -1: warm-up (both processes load the model)
            for model in out:
                prompt = f"run {run}: tell me a story about a lighthouse."
                body = {"model": model, "max_tokens": args.tokens, "temperature": 0,
                        "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
                result = await stream_chat(client, url, body)
                if run >= 0 and result.first is not None:
                    out[model].append((result.first - result.started, result.decode_tps))
            if run >= 0:
                say(f"run {run + 1}/{args.runs} done")
    return out


def report(results: dict[str, list[tuple[float, float]]], tokens: int) -> None:
    local, remote = results["demo"], results["remote-demo"]
    rows = []
    for name, runs in (("in-process", local), ("model server", remote)):
        ttft = [t * 1e3 for t, _ in runs]
        tps = [v for _, v in runs]
        rows.append((name, statistics.median(tps), percentile(tps, 10),
                     statistics.median(ttft), percentile(ttft, 90)))  # fmt: skip
    print(f"\n{len(local)} streams each, {tokens} tokens, greedy, interleaved, c=1")
    print(f"{'':<14} {'decode tok/s p50':>17} {'p10':>8} {'TTFT ms p50':>12} {'p90':>8}")
    for name, tps, tps10, ttft, ttft90 in rows:
        print(f"{name:<14} {tps:>17.1f} {tps10:>8.1f} {ttft:>12.2f} {ttft90:>8.2f}")
    ratio = rows[1][1] / rows[0][1]
    added = rows[1][3] - rows[0][3]
    print(f"decode ratio (model server / in-process): {ratio:.3f} (goal >= {GOAL_RATIO}): "
          f"{'PASS' if ratio >= GOAL_RATIO else 'MISS'}")  # fmt: skip
    print(f"added time to first token: {added:+.2f} ms (goal <= {GOAL_TTFT_MS:g} ms): "
          f"{'PASS' if added <= GOAL_TTFT_MS else 'MISS'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="bench-model-server-"))
    servers: list[ServerProcess] = []
    try:
        say(f"building the demo model ({args.hidden_size} hidden, {args.layers} layers)")
        prepare_gateway_data(workdir, hidden_size=args.hidden_size, layers=args.layers,
                             vocab_size=args.vocab_size, seed=0)  # fmt: skip
        model_server = gateway_server(workdir, GATEWAY_MODEL_SERVER_KEY=KEY)
        servers.append(model_server)
        model_server.start()
        manage(workdir, "shell", "-c", _ROUTE,
               SPEC=json.dumps({"url": f"{model_server.url}/v1", "key": KEY}))  # fmt: skip
        front = gateway_server(workdir, ENABLE_CLOUD_ROUTING="1")
        servers.append(front)
        front.start()
        say(f"model server {model_server.url}, front gateway {front.url}; measuring")
        report(asyncio.run(measure(front.url, args)), args.tokens)
    finally:
        for server in reversed(servers):
            server.stop()
        say("servers stopped")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
