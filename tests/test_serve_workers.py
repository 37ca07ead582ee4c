"""`manage.py serve --workers 2`, for real: two gateway processes on one address
with the demo model in one model-server process started for them; a worker
killed is restarted while the other keeps answering; SIGTERM drains and stops
everything; the missing Redis and database are warned about."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, free_port, server_env, wait_healthy
from .data_templates import TEMPLATES

pytestmark = pytest.mark.e2e
HI = [{"role": "user", "content": "hello"}]


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid` (from /proc): pid -> command line."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(stat.parent.name)] = cmdline
    return out


class Served:
    def __init__(self, data: Path) -> None:
        self.data, self.port = data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data / "serve.log"
        # A session of its own: cleanup kills the whole group, grandchildren too,
        # even after the supervisor is gone (its children are then init's).
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--workers", "2", "--port",
                 str(self.port), "--no-admin"],
                cwd=ROOT, env=server_env(data), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> dict[int, str]:
        return children(self.process.pid)

    def workers(self) -> list[int]:
        return sorted(pid for pid, command in self.children().items() if "--fd" in command)

    def wait_for(self, what: str, check: object, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.log()}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("workers")
    TEMPLATES.copy("demo", data)  # migrated, with the demo model
    server = Served(data)
    try:
        wait_healthy(server.url, server.process, server.log, 120)
        server.wait_for("both workers", lambda: "2 workers started" in server.log())
        yield server
    finally:
        server.kill_all()


def ask(url: str) -> httpx.Response:
    body = {"model": "demo", "messages": HI, "max_tokens": 4}
    # A new connection each time: the kernel picks the worker that accepts it.
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_two_workers_and_one_model_server_answer_on_one_address(served: Served) -> None:
    log = served.log()
    assert "warning: --workers without REDIS_URL" in log
    assert "warning: --workers on SQLite" in log
    assert re.search(r"model server started on http://127\.0\.0\.1:\d+ \(pid \d+\)", log)
    assert len(served.workers()) == 2
    model_servers = [pid for pid, command in served.children().items() if "--fd" not in command]
    assert len(model_servers) == 1
    for _ in range(4):
        reply = ask(served.url)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gateway-backend"] == "local:demo"
    # The model lives in the model server only: the workers never loaded it.
    health = httpx.get(f"{served.url}/health", timeout=10).json()
    assert health["engine"]["resident_models"] == []


def test_a_killed_worker_is_restarted_and_sigterm_stops_everything(served: Served) -> None:
    first, second = served.workers()
    os.kill(first, signal.SIGKILL)
    # Whichever worker number it was, the restart names its new pid.
    restarted = re.compile(r"worker \d+ restarted \(pid (\d+)\)")
    served.wait_for("the restart", lambda: restarted.search(served.log()))
    new = int(restarted.search(served.log()).group(1))  # type: ignore[union-attr]
    assert ask(served.url).status_code == 200  # served throughout
    served.wait_for("two workers again", lambda: len(served.workers()) == 2)
    assert sorted(served.workers()) == sorted([second, new]) and first != new
    before = set(served.children())
    assert len(before) == 3
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0, served.log()[-3000:]
    assert not any(Path(f"/proc/{pid}").exists() for pid in before)
    assert "SIGTERM: draining the workers" in served.log() and "serve: stopped" in served.log()
