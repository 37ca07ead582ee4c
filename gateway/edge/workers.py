"""`serve --workers N`: N gateway processes on one address, supervised.

The supervisor (the process that printed `serve`'s banner) opens the listening
socket once and hands it to each worker (daphne's `--fd`): the kernel spreads
new connections over the processes accepting on it, so there is no balancer of
ours. It restarts a worker that dies (waiting longer after each quick death, so
a worker that cannot start does not spin), and on SIGTERM or SIGINT forwards
SIGTERM to every worker, whose graceful drain (gateway.edge.drain) finishes the
requests in flight, then stops the model server.

With local models, they live in exactly one place: a model server process
(`serve_models`' server, on a loopback port with a key made for this run)
that the supervisor starts first and the workers reach through
GATEWAY_LOCAL_MODELS_URL; without it each worker would load its own copy of
every model.

The unit of state here is the supervisor's process: its children, their
restart counts. Breakers, rate limits and routing changes are shared by the
workers through Redis and the database, which is why `serve` warns when
REDIS_URL or a real database is missing.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import httpx

from .launch import edge_command

logger = logging.getLogger(__name__)

QUICK_DEATH_SECONDS = 10.0  # a worker that dies sooner than this was probably broken
MAX_RESTART_DELAY = 30.0
POLL_SECONDS = 0.5  # how often children are checked (a signal cuts the wait short)


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0  # in a row
    restart_at: float | None = None  # when a dead child is due to start again
    restarts: int = field(default=0)

    def start(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(self.command, env=self.env, pass_fds=self.pass_fds)
        self.started = time.monotonic()
        self.restart_at = None
        return self.process

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket every worker accepts on (IPv4: daphne adopts it as AF_INET)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "0.0.0.0", port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def wait_ready(url: str, child: Child, timeout: float, stopping: Callable[[], bool]) -> bool:
    """Until `child` answers /health at `url` (True), or a stop was asked (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping():
            return False
        if not child.alive():
            raise RuntimeError(f"the {child.name} exited while starting")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the {child.name} did not answer {url}/health in {timeout:g} s")


class Supervisor:
    MODEL_SERVER_START_SECONDS = 120.0  # loading nothing yet: a start takes seconds

    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        *,
        model_server: bool,
        grace: float,
        say: Callable[[str], None] = print,
    ) -> None:
        self.host, self.port, self.count = host, port, workers
        self.with_model_server = model_server
        self.grace, self.say = grace, say
        self.stopping = False
        self.model_server: Child | None = None
        self.workers: list[Child] = []

    def run(self) -> int:
        # The handlers come first: a SIGTERM while the model server starts must
        # stop it too, not kill the supervisor and leave it orphaned.
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        sock = listening_socket(self.host, self.port)
        try:
            env = {k: v for k, v in os.environ.items() if k != "GATEWAY_MODEL_SERVER_KEY"}
            if self.with_model_server:
                env |= self._start_model_server()
            if not self.stopping:
                self._start_workers(sock, env)
            while not self.stopping:
                self._supervise()
                time.sleep(POLL_SECONDS)
        finally:
            # Whatever ended the loop (a signal, a child that would not start),
            # nothing started here outlives the supervisor.
            self.stopping = True
            sock.close()
            self._shutdown()
        return 0

    def _start_workers(self, sock: socket.socket, env: dict[str, str]) -> None:
        for number in range(1, self.count + 1):
            command = edge_command(self.host, self.port, fd=sock.fileno())
            child = Child(f"worker {number}", command, env, (sock.fileno(),))
            child.start()
            self.workers.append(child)
        self.say(f"{self.count} workers started (pids {', '.join(self._pids())})")

    def _start_model_server(self) -> dict[str, str]:
        """The one process that holds local models; the workers' settings to reach it."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        key = secrets.token_urlsafe(32)
        env = {**os.environ, "GATEWAY_MODEL_SERVER_KEY": key}
        child = Child("model server", edge_command("127.0.0.1", port), env)
        process = child.start()
        self.model_server = child
        url = f"http://127.0.0.1:{port}"
        if wait_ready(url, child, self.MODEL_SERVER_START_SECONDS, lambda: self.stopping):
            self.say(f"model server started on {url} (pid {process.pid})")
        return {"GATEWAY_LOCAL_MODELS_URL": f"{url}/v1", "GATEWAY_LOCAL_MODELS_KEY": key}

    def _pids(self) -> list[str]:
        return [str(w.process.pid) for w in self.workers if w.process is not None]

    def _supervise(self) -> None:
        now = time.monotonic()
        for child in [*self.workers, *([self.model_server] if self.model_server else [])]:
            if child.alive() or self.stopping:
                continue
            if child.restart_at is None:
                code = child.process.returncode if child.process else None
                lived = now - child.started
                child.quick_deaths = child.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
                delay = min(MAX_RESTART_DELAY, 2.0 ** child.quick_deaths - 1)
                child.restart_at = now + delay
                logger.error(
                    "%s (pid %s) exited with %s after %.0f s; restarting in %.0f s",
                    child.name, child.process.pid if child.process else "?", code, lived, delay,
                )  # fmt: skip
            if now >= child.restart_at:
                process = child.start()
                child.restarts += 1
                self.say(f"{child.name} restarted (pid {process.pid})")

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.say(f"{signal.Signals(signum).name}: draining the workers")
        self.stopping = True

    def _shutdown(self) -> None:
        """SIGTERM to the workers (their drain), then the model server; what is
        still running after the grace and a margin is killed."""
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        self._wait(self.workers, self.grace + 10)
        if self.model_server is not None:
            self.model_server.signal(signal.SIGTERM)
            self._wait([self.model_server], self.grace + 10)
        self.say("stopped")

    def _wait(self, children: list[Child], seconds: float) -> None:
        """One deadline for all of them: N slow children take `seconds`, not N times it."""
        deadline = time.monotonic() + seconds
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("%s did not stop in %.0f s: killed", child.name, seconds)
                child.process.kill()
                child.process.wait()
