"""Gateway overhead: the same upstream called directly and through one daphne process.

    .venv/bin/python benchmarks/bench_overhead.py [--profile /tmp/gateway.stacks]

Needs Debian's `wrk`. The upstream is the project's fake upstream in its own
process; its throughput alone (with wrk) must be far above the gateway's, or a
warning says so. The gateway gets cloud routing to it and a client API key.
Measured direct and through the gateway with identical requests: non-streaming
latency and streaming time to the first content chunk (p50/p99, concurrency 1,
a blocking raw-socket keep-alive client, requests interleaved), and requests/s
at concurrency 32 (wrk) with the server's CPU per request. ``--profile`` then
samples the gateway with py-spy under that load. Only loopback addresses are
used; the work dir (logs) is kept when a run fails.
Goals: p50 added latency < 2 ms, TTFB added < 3 ms, >= 500 req/s at c=32.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    ServerProcess,
    free_port,
    gateway_server,
    install_cleanup,
    manage,
    offline_env,
    percentile,
)
from common import progress as say
from wrk_load import Result, wrk

# The fake upstream takes any key: the provider's, and the gateway client key sent direct.
UPSTREAM_KEY, PATH = "sk-bench", "/v1/chat/completions"
MODEL = "gpt-bench"  # mapped to itself: direct and gateway requests are byte-identical
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
GOAL_LATENCY_MS, GOAL_TTFB_MS, GOAL_RPS = 2.0, 3.0, 500.0
Times = list[list[float]]  # seconds per request, one list per target

_APPLY_SPEC = """
import json, os
from routing.models import BackendMapping, CloudCredential, MappingTarget, Provider
spec = json.loads(os.environ["ROUTING_SPEC"])
cred = CloudCredential(provider=Provider.objects.create(**spec["provider"]))
cred.set_key(spec["key"])
cred.save()
mapping = BackendMapping.objects.create(pattern=spec["model"])
MappingTarget.objects.create(mapping=mapping, position=0, provider=cred.provider,
                             upstream_model=spec["model"])
"""


class RawClient:
    """Blocking HTTP/1.1 keep-alive client on one socket: the least client cost per request."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.addr, self.key = (host, int(port)), key
        self.sock: socket.socket | None = None
        self.buf = b""

    def request_bytes(self, body: dict[str, object]) -> bytes:
        data = orjson.dumps(body)
        return (
            f"POST {PATH} HTTP/1.1\r\nHost: {self.addr[0]}:{self.addr[1]}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError(f"{self.addr} closed the connection")
        self.buf += data

    def post(self, raw: bytes, stream: bool) -> tuple[int, bytes, float]:
        """Status, body, and seconds to the first content event (streams) or to the end."""
        if self.sock is None:
            self.sock = socket.create_connection(self.addr)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        started = time.perf_counter()
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buf[:end].decode("latin1").split("\r\n")
        self.buf = self.buf[end + 4 :]
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        first: float | None = None
        body = b""
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self.buf) < size:
                self._fill()
            body, self.buf = self.buf[:size], self.buf[size:]
        else:  # chunked: a stream's first content may come long before its end
            while True:
                while (eol := self.buf.find(b"\r\n")) < 0:
                    self._fill()
                size = int(self.buf[:eol].split(b";")[0], 16)
                while len(self.buf) < eol + size + 4:
                    self._fill()
                body += self.buf[eol + 2 : eol + 2 + size]
                self.buf = self.buf[eol + size + 4 :]
                if size == 0:
                    break
                if stream and first is None and has_content(body):
                    first = time.perf_counter()
        ended = time.perf_counter()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(lines[0].split()[1]), body, (first or ended) - started

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def has_content(body: bytes) -> bool:
    """True once a complete SSE event carries a non-empty delta.content."""
    for event in body.split(b"\n\n")[:-1]:
        if event.startswith(b"data: {"):
            for choice in orjson.loads(event[6:]).get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    return True
    return False


def interleaved(urls: list[str], key: str, body: dict[str, object], n: int, warmup: int) -> Times:
    """Sequential requests, alternating between the targets; seconds, per target."""
    clients = [RawClient(url, key) for url in urls]
    raws = [c.request_bytes(body) for c in clients]
    stream = bool(body.get("stream"))
    times: Times = [[] for _ in urls]
    for i in range(warmup + n):
        for client, raw, out in zip(clients, raws, times, strict=True):
            status, reply, seconds = client.post(raw, stream)
            if status != 200 or (stream and not has_content(reply)):
                raise RuntimeError(f"{client.addr}: HTTP {status}: {reply[:300]!r}")
            if i >= warmup:
                out.append(seconds)
    for client in clients:
        client.close()
    return times


GATEWAY_ENV = {"ENABLE_CLOUD_ROUTING": "1", "GATEWAY_LOG_LEVEL": "WARNING"}


def start_gateway(
    workdir: Path, upstream_url: str, module: str = "gateway.edge.server"
) -> tuple[ServerProcess, str]:
    """A migrated, configured gateway, and a client API key for it."""
    data, secret = prepare_gateway(workdir, upstream_url)
    server = gateway_server(data, module=module, **GATEWAY_ENV)
    server.start()
    return server, secret


def prepare_gateway(workdir: Path, upstream_url: str) -> tuple[Path, str]:
    """A migrated data dir routing MODEL to the upstream, and a client API key."""
    data, env = workdir / "gateway", GATEWAY_ENV
    provider = {"name": "bench", "kind": "openai", "base_url": f"{upstream_url}/v1",
                "max_retries": 0, "breaker_fail_max": 1000, "first_byte_timeout": 10.0}  # fmt: skip
    spec = {"key": UPSTREAM_KEY, "model": MODEL, "provider": provider}
    data.mkdir(exist_ok=True)
    manage(data, "migrate", "--noinput", **env)
    manage(data, "shell", "-c", _APPLY_SPEC, ROUTING_SPEC=json.dumps(spec), **env)
    secret = manage(data, "create_api_key", "bench", **env).split()[-1]  # printed last
    return data, secret


# Self time: the group of the innermost frame that has one (first match wins).
SELF_GROUPS = {
    "daphne + twisted": ("/daphne/", "/twisted/"),
    "asyncio event loop": ("/asyncio/", "/selectors.py"),
    "asgiref (sync<->async hops)": ("/asgiref/",),
    "threading + concurrent.futures (thread per request, hops)": (
        "/threading.py", "/concurrent/", "/queue.py"),
    "django middleware": ("/django/middleware/", "/django/contrib/"),
    "django other (handler, http, urls, signals, db)": ("/django/",),
    "ninja": ("/ninja/",),
    "pydantic": ("/pydantic",),
    "httpx + httpcore + h11 + anyio": ("/httpx/", "/httpcore/", "/h11/", "/anyio/"),
    "our code (gateway/ routing/ inference/)": tuple(
        f"{ROOT}/{d}/" for d in ("gateway", "routing", "inference")),
}  # fmt: skip
# Inclusive time: samples whose stack passes through a file.
INSIDE = {
    "Django ASGIHandler (all of Django)": "/django/core/handlers/asgi.py",
    "  MiddlewareMixin.__acall__ (old-style middleware)": "/django/utils/deprecation.py",
    "  ninja operation (the view)": "/ninja/operation.py",
    "    routing/failover.py": f"{ROOT}/routing/failover.py",
    "      httpx AsyncClient (upstream call)": "/httpx/_client.py",
    "    pydantic model_validate": "/pydantic/main.py",
    "  request_started/finished signals": "/django/dispatch/",
    "worker threads (thread side of sync_to_async)": "concurrent/futures/thread.py",
    "asgiref/sync.py (both sides of each hop)": "/asgiref/sync.py",
}


def profile(gateway: ServerProcess, key: str, out: Path, seconds: float, workdir: Path) -> None:
    assert gateway.process is not None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # --gil: only the thread holding the GIL (idle pool threads blocked in queue.get
    # would count as busy otherwise); --nonblocking: do not pause the ~one new thread
    # per request at every sample, which slows the gateway down by a third.
    argv = [spy, "record", "--pid", str(gateway.process.pid), "--rate", "250", "--gil",
            "--nonblocking", "--threads", "--full-filenames", "--format", "raw",
            "--duration", f"{seconds:g}", "--output", str(out)]  # fmt: skip
    say(f"profiling the gateway: py-spy {seconds:g}s under c=32 non-streaming load (wrk)")
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy_proc:
        time.sleep(1.0)
        loaded = wrk(gateway, key, BODY, seconds - 2, workdir)
        _, err = spy_proc.communicate(timeout=seconds + 60)
    if spy_proc.returncode or not out.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
    total, groups, inside, leaves = 0, Counter[str](), Counter[str](), Counter[str]()
    executors: set[str] = set()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        executors.update(re.findall(r"ThreadPoolExecutor-\d+", frames[0]))
        leaf = frames[-1]
        # Innermost frame of a known group: stdlib leaves (email, json...) go to their caller.
        owner = (
            g for f in reversed(frames) for g, ks in SELF_GROUPS.items() if any(k in f for k in ks)
        )
        groups[next(owner, "other")] += n
        leaves[re.sub(r"\(.*/(site-packages|python3\.\d+)/", "(", leaf)] += n
        for label, key in INSIDE.items():
            inside[label] += n if any(key in f for f in frames) else 0
    if not total:
        raise RuntimeError("py-spy recorded no samples")
    print(f"\nprofile ({out}, raw stacks): {total} GIL-holding samples, {loaded['rps']:.0f} "
          f"req/s under py-spy, gateway CPU {loaded['cores']:.2f} cores = "
          f"{loaded['cpu_ms']:.2f} ms/request; {len(executors)} distinct per-request "
          f"ThreadPoolExecutors seen in {loaded['requests']} requests")  # fmt: skip
    print("\nself time by group (innermost frame of a known group):")
    for label, n in groups.most_common():
        print(f"  {n / total:6.1%}  {label}")
    print("\ntime inside (inclusive; indented rows are nested in the one above):")
    for label, n in inside.items():
        print(f"  {n / total:6.1%}  {label}")
    print("\ntop functions by self time:")
    for leaf, n in leaves.most_common(20):
        print(f"  {n / total:6.1%}  {leaf.replace(str(ROOT) + '/', '')[:110]}")


def ms(values: list[float], pct: float) -> float:
    return percentile(values, pct) * 1e3


def table(lat: Times, ttfb: Times, rps: dict[str, list[Result]]) -> None:
    rows: list[tuple[str, ...]] = [("figure", "direct", "gateway", "added/ratio", "goal", "result")]
    for figure, pair, pct, goal in (
        ("latency p50, c=1", lat, 50, GOAL_LATENCY_MS), ("latency p99, c=1", lat, 99, None),
        ("stream TTFB p50, c=1", ttfb, 50, GOAL_TTFB_MS), ("stream TTFB p99, c=1", ttfb, 99, None),
    ):  # fmt: skip
        d, g = ms(pair[0], pct), ms(pair[1], pct)
        verdict = "info" if goal is None else ("PASS" if g - d < goal else "MISS")
        goal_text = "-" if goal is None else f"added < {goal:g} ms"
        rows.append((figure, f"{d:.3f} ms", f"{g:.3f} ms", f"+{g - d:.3f} ms", goal_text, verdict))
    for name, figure in (("plain", "req/s, c=32"), ("stream", "req/s, c=32, 16-token streams")):
        d, g = rps[name][0]["rps"], rps[name][1]["rps"]
        goal_text, verdict = "-", "info"
        if name == "plain":
            goal_text, verdict = f">= {GOAL_RPS:.0f}/s", "PASS" if g >= GOAL_RPS else "MISS"
        rows.append((figure, f"{d:.0f}", f"{g:.0f}", f"{g / d:.3f}x", goal_text, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    rows.insert(1, tuple("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def start_upstream(workdir: Path, servers: list[ServerProcess]) -> ServerProcess:
    """The fake upstream in its own process (stopped with `servers`)."""
    say(f"starting the fake upstream in its own process (logs in {workdir})")
    port = free_port()
    argv = [sys.executable, "-m", "fake_upstream", "--port", str(port), "--no-record"]
    upstream = ServerProcess("fake upstream", argv, offline_env(),
                             workdir / "fake-upstream.log", port, "/_control/health")  # fmt: skip
    servers.append(upstream)
    upstream.start()
    return upstream


def run(args: argparse.Namespace, workdir: Path, servers: list[ServerProcess]) -> None:
    upstream = start_upstream(workdir, servers)
    say("migrating, configuring routing and a client key, starting one daphne gateway process")
    gateway, key = start_gateway(workdir, upstream.url, args.server)
    servers.append(gateway)
    urls, n = [upstream.url, gateway.url], args.requests
    say(f"c=1 non-streaming: {n} requests per target after {args.warmup} warm-up, interleaved")
    lat = interleaved(urls, key, BODY, n, args.warmup)
    say(f"  p50 direct {ms(lat[0], 50):.3f} ms, gateway {ms(lat[1], 50):.3f} ms")
    say(f"c=1 streaming: time to the first content chunk, {n} streams per target")
    ttfb = interleaved(urls, key, STREAM_BODY, n, args.warmup)
    say(f"  p50 direct {ms(ttfb[0], 50):.3f} ms, gateway {ms(ttfb[1], 50):.3f} ms")
    rps: dict[str, list[Result]] = {}
    for name, body in (("plain", BODY), ("stream", STREAM_BODY)):
        rps[name] = []
        for server, who in ((upstream, "direct"), (gateway, "gateway")):
            wrk(server, key, body, 1, workdir)  # warm-up: fills the keep-alive pools
            say(f"c=32 {name}: wrk {args.seconds:g}s against the {who}")
            rps[name].append(r := wrk(server, key, body, args.seconds, workdir))
            say(f"  {r['rps']:.0f} req/s ({r['requests']} requests), latency p50 "
                f"{r['p50_us'] / 1e3:.2f} ms p99 {r['p99_us'] / 1e3:.2f} ms; server CPU "
                f"{r['cores']:.2f} cores, {r['cpu_ms']:.3f} ms/request "
                f"({r['sys_ms']:.3f} ms of it in the kernel)")  # fmt: skip
    print("\nupstream: the fake upstream (python -m fake_upstream), own process")
    print("load: blocking raw-socket keep-alive client (c=1), wrk -t1 -c32 (c=32)")
    for name, (direct, via) in rps.items():
        headroom = direct["rps"] / via["rps"]
        print(f"upstream + wrk alone, {name}: {direct['rps']:.0f} req/s = {headroom:.0f}x the "
              f"gateway{'' if headroom >= 5 else ' (WARNING: not clearly faster)'}")  # fmt: skip
    for name, (_, via) in rps.items():
        print(f"gateway CPU at c=32, {name}: {via['cpu_ms']:.2f} ms/request "
              f"({via['sys_ms']:.2f} ms system), {via['cores']:.2f} cores")  # fmt: skip
    print()
    table(lat, ttfb, rps)
    if args.profile:
        profile(gateway, key, args.profile, args.profile_seconds, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="per target, concurrency 1")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="each c=32 wrk run")
    parser.add_argument("--profile", type=Path, help="py-spy: raw stacks here, and a summary")
    parser.add_argument("--profile-seconds", type=float, default=12.0)
    parser.add_argument(
        "--server",
        choices=["gateway.edge.server", "daphne"],
        default="gateway.edge.server",
        help="how the gateway is served: daphne with the edge guard (as manage.py serve), "
        "or bare daphne (to measure what the guard costs)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="instead: requests/s at c=64 through `serve --workers 1` and `--workers N`, "
        "and the gateway processes' CPU per request for each (overhead_workers.py)",
    )
    parser.add_argument(
        "--transports",
        action="store_true",
        help="instead: one gateway per upstream transport (httpx, httpx-aiohttp, ...), "
        "added latency and requests/s at c=32 each (overhead_transports.py)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="--transports: wrk passes")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for the c=32 figures: apt-get install -y wrk")
    install_cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    servers: list[ServerProcess] = []
    try:
        if args.workers:
            from overhead_workers import run_workers

            run_workers(args, workdir, servers)
        elif args.transports:
            from overhead_transports import run_transports

            run_transports(args, workdir, servers)
        else:
            run(args, workdir, servers)
    finally:
        for server in reversed(servers):
            server.stop()
        say("servers stopped")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
