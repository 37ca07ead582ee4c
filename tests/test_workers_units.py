"""`serve --workers`' supervisor (gateway/edge/workers.py) in this process: a stop
asked while the model server starts stops it, and the shutdown's wait shares one
deadline. The real processes end to end are tests/test_serve_workers.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from gateway.edge import workers
from gateway.edge.workers import Child, Supervisor

from .conftest import free_port

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def own_signals() -> Iterator[None]:
    """The test's SIGTERM must never stop pytest: a no-op handler until the
    supervisor installs its own, and pytest's handlers back after."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_sigterm_while_the_model_server_starts_stops_it(
    monkeypatch: pytest.MonkeyPatch, own_signals: None
) -> None:
    # The "model server" never answers /health: only the stop can end its start.
    monkeypatch.setattr(workers, "edge_command", lambda *args, **kwargs: SLEEPER)
    said: list[str] = []
    supervisor = Supervisor(
        "127.0.0.1", free_port(), 2, model_server=True, grace=0, say=said.append
    )
    supervisor.MODEL_SERVER_START_SECONDS = 30.0

    def terminate_once_started() -> None:
        while supervisor.model_server is None or not supervisor.model_server.alive():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_started, daemon=True).start()
    assert supervisor.run() == 0
    assert supervisor.model_server is not None and supervisor.model_server.process is not None
    assert supervisor.model_server.process.returncode is not None  # stopped and reaped
    assert supervisor.workers == []  # none started after the stop
    assert said == ["SIGTERM: draining the workers", "stopped"]


class _Stubborn:
    """A process that never exits on its own; the fake clock runs while it is waited for."""

    def __init__(self, clock: list[float], waits: list[float | None]) -> None:
        self.clock, self.waits, self.killed = clock, waits, False

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if timeout is None or self.killed:
            return -9
        self.clock[0] += timeout
        raise subprocess.TimeoutExpired("stubborn", timeout)

    def kill(self) -> None:
        self.killed = True


def test_the_shutdown_wait_shares_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, waits = [100.0], []
    monkeypatch.setattr(workers, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    children = [Child(f"worker {n}", SLEEPER, {}) for n in (1, 2, 3)]
    for child in children:
        child.process = _Stubborn(clock, waits)  # type: ignore[assignment]
    supervisor = Supervisor("127.0.0.1", 0, 3, model_server=False, grace=0, say=lambda line: None)
    supervisor._wait(children, 5.0)
    # The first child used the 5 s; the others get the floor, not 5 s more each.
    assert [w for w in waits if w is not None] == [5.0, 0.1, 0.1]
    assert all(child.process.killed for child in children)  # type: ignore[union-attr]
