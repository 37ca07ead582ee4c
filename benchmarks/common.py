"""Helpers shared by the benchmark scripts: servers, ports, streaming, percentiles.

Everything here talks to loopback addresses only, and every child process is
started with the Hugging Face hub switched off: benchmarks must never download.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

# Set before anything imports mlx_lm or huggingface_hub in this process: the
# direct baseline loads the model in-process.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent
_STARTED = time.monotonic()
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks, as numpy's default does."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def offline_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no hub, no proxies, no inherited gateway config."""
    # A GATEWAY_* or DATABASE_URL from the caller's shell would point the
    # benchmark gateway at someone else's data.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.pop("DATABASE_URL", None)
    for name in _PROXY_VARS:
        env.pop(name, None)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _die_with_parent() -> None:
    # If this script is killed outright its finally blocks never run; ask the
    # kernel to stop the servers then, rather than leave them holding CPU.
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_LIVE: list[ServerProcess] = []


def stop_all() -> None:
    for server in reversed(_LIVE):
        server.stop()


def install_cleanup() -> None:
    """Stop every started server on exit, on Ctrl-C and on SIGTERM."""
    atexit.register(stop_all)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through finally blocks

    signal.signal(signal.SIGTERM, on_term)


@dataclass
class ServerProcess:
    """An HTTP server child process on a loopback port, with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    health_path: str = "/health"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        with open(self.log_path, "wb") as log:
            # Own session: a terminal Ctrl-C reaches only this script, which then
            # stops the servers in order instead of racing their own handlers.
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE.append(self)
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + self.health_path).status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def manage(data_dir: Path, *args: str, **extra_env: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=gateway_env(data_dir, **extra_env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def gateway_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return offline_env(
        GATEWAY_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="gateway.settings", **extra
    )


def prepare_gateway_data(
    data_dir: Path, *, hidden_size: int, layers: int, vocab_size: int, seed: int
) -> Path:
    """Migrate a fresh data dir and build + register the demo model; returns its folder."""
    model_dir = data_dir / "models" / "demo"
    manage(data_dir, "migrate", "--noinput")
    manage(
        data_dir,
        "build_demo_model",
        "--path", str(model_dir),
        "--hidden-size", str(hidden_size),
        "--layers", str(layers),
        "--vocab-size", str(vocab_size),
        "--seed", str(seed),
    )  # fmt: skip
    # The gateway requires client keys, and checking one is part of its cost.
    _client_headers["Authorization"] = (
        f"Bearer {manage(data_dir, 'create_api_key', 'bench').split()[-1]}"
    )
    return model_dir


# Sent by every benchmark client (mlx_lm.server ignores them).
_client_headers: dict[str, str] = {}


def gateway_server(
    data_dir: Path, *, module: str = "gateway.edge.server", **extra_env: str
) -> ServerProcess:
    """The gateway as `manage.py serve` starts it (daphne with the edge guard);
    module="daphne" for bare daphne, to measure what the guard costs."""
    port = free_port()
    argv = [sys.executable, "-m", module, "-b", "127.0.0.1", "-p", str(port)]
    return ServerProcess(
        name=f"gateway ({module})",
        argv=[*argv, "gateway.asgi:application"],
        env=gateway_env(data_dir, **extra_env),
        log_path=data_dir / f"daphne-{port}.log",
        port=port,
    )


def mlx_lm_server(model_dir: Path, log_dir: Path) -> ServerProcess:
    port = free_port()
    # --model is a local folder, so mlx_lm loads it without any hub lookup;
    # the offline environment makes an accidental lookup fail instead of download.
    argv = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir)]
    return ServerProcess(
        name="mlx_lm.server",
        argv=[*argv, "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"],
        env=offline_env(),
        log_path=log_dir / f"mlx_lm_server-{port}.log",
        port=port,
    )


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must not see loopback traffic.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(600.0, connect=10.0)
    return httpx.AsyncClient(
        trust_env=False, limits=limits, timeout=timeout, headers=_client_headers, **kwargs
    )


@dataclass
class StreamResult:
    """One streamed chat completion, timed on the client."""

    tokens: int  # from usage when the server reports it, else content chunks
    content_chunks: int
    usage_reported: bool
    finish_reason: str | None
    started: float
    first: float | None  # first chunk with content
    last: float | None  # last chunk with content
    ended: float
    text: str = ""  # the content, for a conversation's next turn
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, if reported

    @property
    def decode_tps(self) -> float:
        """Tokens after the first over the time from first to last content: no prefill."""
        if self.first is None or self.last is None or self.last <= self.first:
            return float("nan")
        return (self.tokens - 1) / (self.last - self.first)


async def stream_chat(
    client: httpx.AsyncClient,
    base_url: str,
    body: dict[str, Any],
    on_first: Callable[[], None] | None = None,
    on_chunk: Callable[[float, str], None] | None = None,
) -> StreamResult:
    """POST a streaming chat completion and read the SSE stream to its end."""
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    cached: int | None = None
    parts: list[str] = []
    finish: str | None = None
    async with client.stream("POST", f"{base_url}/v1/chat/completions", json=payload) as resp:
        if resp.status_code != 200:
            detail = (await resp.aread()).decode(errors="replace")[:500]
            raise RuntimeError(f"HTTP {resp.status_code} from {base_url}: {detail}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = orjson.loads(data)
            if event.get("error"):
                raise RuntimeError(f"stream error from {base_url}: {event['error']}")
            usage = event.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                usage_tokens = int(usage["completion_tokens"])
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            for choice in event.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    parts.append(content)
                    if on_chunk is not None:
                        on_chunk(now, content)
                    if first is None:
                        first = now
                        if on_first is not None:
                            on_first()
                    last = now
                    chunks += 1
                finish = choice.get("finish_reason") or finish
    return StreamResult(
        tokens=usage_tokens if usage_tokens is not None else chunks,
        content_chunks=chunks,
        usage_reported=usage_tokens is not None,
        finish_reason=finish,
        started=started,
        first=first,
        last=last,
        ended=time.perf_counter(),
        text="".join(parts),
        cached_tokens=cached,
    )


def sample_latency(
    url: str,
    *,
    count: int,
    interval_s: float,
    time_limit_s: float,
    keep_going: Callable[[], bool] = lambda: True,
) -> list[float]:
    """Sequential GETs, `interval_s` apart; returns latencies in seconds.

    A sync client on its own connection, meant for a worker thread: the event
    loop that reads the load streams then adds no scheduling delay to the figures.
    """
    latencies: list[float] = []
    deadline = time.monotonic() + time_limit_s
    with httpx.Client(trust_env=False, timeout=10.0, headers=_client_headers) as client:
        while len(latencies) < count and time.monotonic() < deadline and keep_going():
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            latencies.append(elapsed)
            time.sleep(interval_s)
    return latencies
