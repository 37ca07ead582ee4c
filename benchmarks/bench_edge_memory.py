"""Memory under hostile requests: the gateway's RSS before, at peak and after each case.

    .venv/bin/python benchmarks/bench_edge_memory.py [--names 100]

One gateway process (daphne with the edge guard, as `manage.py serve` runs it)
on a fresh data dir with the demo model. Cases, each after the previous one:
huge model names (10 MiB each) to count_tokens; a 19 MiB prompt to count_tokens
and to chat completions; three concurrent 7.6 MiB prompts. RSS and its peak
(VmHWM) are read from /proc. The peak is the process's high-water mark: it can
only grow, so each case's peak is the highest up to it. The figures issue #13
reported before these limits are printed alongside.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import gateway_server, install_cleanup, manage, progress

JSON = {"Content-Type": "application/json"}


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        values[key] = int(value.split()[0]) / 1024 if key in ("VmRSS", "VmHWM") else 0
    return values["VmRSS"], values["VmHWM"]


def post(url: str, path: str, body: dict[str, object]) -> int:
    return httpx.post(url + path, content=json.dumps(body), headers=JSON, timeout=300).status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=100, help="requests with 10 MiB model names")
    args = parser.parse_args()
    install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="bench-edge-memory-"))
    progress("preparing a data dir with the demo model")
    manage(workdir, "migrate", "--noinput")
    manage(workdir, "build_demo_model")
    server = gateway_server(workdir, GATEWAY_REQUIRE_API_KEYS="0")
    server.start()
    url, pid = server.url, server.process.pid  # type: ignore[union-attr]
    hi = [{"role": "user", "content": "hi"}]
    post(url, "/v1/messages/count_tokens", {"model": "demo", "messages": hi})  # model loaded
    prompt_19 = "word " * ((19 << 20) // 5)
    prompt_7 = "word " * ((76 << 20) // 50)

    def names() -> list[int]:
        body = {"model": "m" * (10 << 20), "messages": hi}
        return [post(url, "/v1/messages/count_tokens", body) for _ in range(args.names)]

    def count_19() -> list[int]:
        body = {"model": "demo", "messages": [{"role": "user", "content": prompt_19}]}
        return [post(url, "/v1/messages/count_tokens", body)]

    def chat_19() -> list[int]:
        body = {
            "model": "demo",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": prompt_19}],
        }
        return [post(url, "/v1/chat/completions", body)]

    def three_7() -> list[int]:
        body = {"model": "demo", "messages": [{"role": "user", "content": prompt_7}]}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            return list(pool.map(lambda _: post(url, "/v1/messages/count_tokens", body), range(3)))

    cases: list[tuple[str, Callable[[], list[int]], str]] = [
        (f"{args.names} x 10 MiB model names, count_tokens", names, "145 -> 1,700 MiB kept"),
        ("19 MiB prompt, count_tokens", count_19, "peak ~5 GB, 2.7-3.4 GB kept"),
        ("19 MiB prompt, chat completions", chat_19, "peak ~5 GB, 2.7-3.4 GB kept"),
        ("3 concurrent 7.6 MiB prompts, count_tokens", three_7, "peak 7.6 GB"),
    ]
    rows = []
    try:
        for name, case, before_fix in cases:
            progress(name)
            rss_before, _ = memory(pid)
            statuses = sorted(set(case()))
            # The last failed request is held until the next replaces it.
            for _ in range(3):
                post(url, "/v1/messages/count_tokens", {"model": "demo", "messages": hi})
            rss_after, peak = memory(pid)
            rows.append((name, statuses, rss_before, peak, rss_after, before_fix))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{'case':46} {'answers':10} {'RSS before':>11} {'peak':>9} {'RSS after':>10}  issue #13")
    for name, statuses, before, peak, after, before_fix in rows:
        answers = ",".join(map(str, statuses))
        figures = f"{before:8.0f} MiB {peak:5.0f} MiB {after:7.0f} MiB"
        print(f"{name:46} {answers:10} {figures}  {before_fix}")


if __name__ == "__main__":
    main()
