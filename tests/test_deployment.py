"""A deployment of the README's production section, for real: two request workers
(gateway processes sharing one database and one Redis) in front of two model
servers serving the demo model as one load-balanced group.

It runs on whatever database the suite runs on: SQLite in the README's test
command, PostgreSQL in CI's second pass, which selects it explicitly
(`-m deployment`, .ci/run) although it drives live servers. Checked: requests
spread over both model servers; rate limits and breakers hold across both
workers; a routing change reaches both; and killing a model server mid-run
loses no request that had not started streaming (and the streams cut on it
are continued by the other, or end with an in-band error).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from .conftest import (
    LiveServer,
    configure_routing,
    free_port,
    fresh_database,
    make_api_keys,
    server_env,
    start_together,
)

pytestmark = [pytest.mark.e2e, pytest.mark.deployment]

KEY = "ms-deploy-" + "k" * 30
HI = [{"role": "user", "content": "hello there"}]
MODEL_SERVER = {
    "kind": "model-server", "key": KEY, "max_retries": 0, "connect_timeout": 1.0,
    "first_token_timeout": 30.0, "breaker_fail_max": 3, "breaker_reset_timeout": 60.0,
}  # fmt: skip


@dataclass
class Deployment:
    workers: tuple[LiveServer, LiveServer]
    model_servers: tuple[LiveServer, LiveServer]
    limited_key: str


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Deployment]:
    servers = []
    for name in ("ms-1", "ms-2"):
        data = tmp_path_factory.mktemp(name)
        server = LiveServer(data_dir=data, env=server_env(data, GATEWAY_MODEL_SERVER_KEY=KEY))
        server.prepare(demo=True)
        servers.append(server)
    front = tmp_path_factory.mktemp("front")
    with fresh_database("gateway_deploy") as database:
        env = server_env(
            front, ENABLE_CLOUD_ROUTING="1", REDIS_URL=redis_url,
            GATEWAY_ROUTING_REFRESH_SECONDS="1", **database,
        )  # fmt: skip
        workers = (LiveServer(data_dir=front, env=env), LiveServer(data_dir=front, env=env))
        workers[0].prepare()
        broken = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        configure_routing(workers[0], {
            "providers": [
                *({**MODEL_SERVER, "name": s, "base_url": f"{m.url}/v1"}
                  for s, m in zip(("ms-1", "ms-2"), servers, strict=True)),
                {**MODEL_SERVER, "name": "broken", "base_url": broken, "breaker_fail_max": 2},
            ],
            "mappings": [
                {"pattern": "demo", "chain": [{"group": [{"provider": "ms-1", "model": "demo"},
                                                          {"provider": "ms-2", "model": "demo"}]}]},
                {"pattern": "broken", "chain": [{"provider": "broken", "model": "demo"}]},
            ],
        })  # fmt: skip
        keys = make_api_keys(workers[0], {"limited": {"requests_per_minute": 3}})
        start_together(*servers, *workers)
        try:
            yield Deployment(workers, (servers[0], servers[1]), keys["limited"])
        finally:
            for server in (*workers, *servers):
                server.stop()


def chat(worker: LiveServer, model: str = "demo", key: str = "x", **body: object) -> httpx.Response:
    payload = {"model": model, "messages": HI, "max_tokens": 4, **body}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{worker.url}/v1/chat/completions", json=payload, headers=headers,
                      timeout=120)  # fmt: skip


@dataclass
class Outcome:
    status: int
    backend: str = ""
    content: bool = False  # streamed some content
    finished: bool = False  # a finish reason and [DONE]
    error: str = ""  # an in-band error after content


def stream(worker: LiveServer, max_tokens: int, started: threading.Event | None = None) -> Outcome:
    payload = {"model": "demo", "messages": HI, "max_tokens": max_tokens, "stream": True}
    with httpx.stream("POST", f"{worker.url}/v1/chat/completions", json=payload,
                      timeout=120) as response:  # fmt: skip
        outcome = Outcome(response.status_code, response.headers.get("x-gateway-backend", ""))
        if response.status_code != 200:
            return outcome
        finish = done = False
        for line in response.iter_lines():
            done = done or line == "data: [DONE]"
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if "error" in data:
                outcome.error = data["error"]["message"]
                continue
            for choice in data.get("choices") or []:
                if choice["delta"].get("content"):
                    outcome.content = True
                    if started is not None and outcome.backend == "ms-2":
                        started.set()
                finish = finish or bool(choice.get("finish_reason"))
        outcome.finished = finish and done
        return outcome


def test_requests_spread_over_both_model_servers(deployment: Deployment) -> None:
    a, b = deployment.workers
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda i: stream((a, b)[i % 2], 24), range(16)))
    assert all(o.status == 200 and o.finished and o.content for o in outcomes), outcomes
    served = [o.backend for o in outcomes]
    # An exact rule, whatever the timing: least-in-flight counts requests across
    # both workers, and a tie goes to the members in turn (routing/balance.py).
    # So a worker's second pick can pass over a member only while that member
    # has a request in flight, i.e. serves one: with eight requests per worker,
    # both members always serve.
    assert set(served) == {"ms-1", "ms-2"}, served


def test_a_rate_limit_holds_across_both_workers(deployment: Deployment) -> None:
    a, b = deployment.workers
    statuses = [chat(w, key=deployment.limited_key).status_code for w in (a, b, a, b, a, b)]
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429], statuses


def test_a_breaker_opened_through_one_worker_is_open_in_the_other(deployment: Deployment) -> None:
    a, b = deployment.workers
    for _ in range(2):  # breaker_fail_max 2: connection refused twice, through worker A
        failed = chat(a, "broken")
        assert failed.status_code >= 500 and "skipped" not in failed.headers["x-gateway-attempts"]
    skipped = chat(b, "broken")
    assert skipped.status_code == 503, skipped.text
    assert skipped.headers["x-gateway-attempts"] == "broken/demo=skipped (breaker open)"


def test_a_routing_change_reaches_both_workers(deployment: Deployment) -> None:
    a, b = deployment.workers
    assert httpx.get(f"{b.url}/v1/models/demo-alias", timeout=10).status_code == 404
    configure_routing(a, {"mappings": [
        {"pattern": "demo-alias", "chain": [{"provider": "ms-1", "model": "demo"}]},
    ]})  # fmt: skip
    # Each worker checks the routing version every GATEWAY_ROUTING_REFRESH_SECONDS (1 s).
    for worker in (a, b):
        wait_until(lambda w=worker: chat(w, "demo-alias").status_code == 200, "the new mapping")
        assert chat(worker, "demo-alias").headers["x-gateway-backend"] == "ms-1"


def wait_until(check: object, what: str, seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_killing_a_model_server_mid_run_loses_no_request(deployment: Deployment) -> None:
    a, b = deployment.workers
    started = threading.Event()
    with ThreadPoolExecutor(18) as pool:
        running = [pool.submit(stream, (a, b)[i % 2], 200, started) for i in range(12)]
        assert started.wait(120), "no stream started on ms-2"
        deployment.model_servers[1].process.kill()  # type: ignore[union-attr]
        later = [pool.submit(stream, (a, b)[i % 2], 8) for i in range(6)]
        outcomes = [f.result() for f in running + later]
    # Nothing failed before it streamed: the group's other member took those.
    assert all(o.status == 200 and o.content for o in outcomes), outcomes
    # A stream cut on ms-2 was continued by ms-1, or ended with an in-band error.
    assert all(o.finished or o.error for o in outcomes), outcomes
    assert any(o.backend == "ms-2" for o in outcomes)
    assert all(o.finished and o.backend == "ms-1" for o in outcomes[12:]), outcomes[12:]
