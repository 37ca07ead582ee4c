"""Circuit breakers end to end: a flapping primary, shared by two processes via Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference.fake_upstream import FakeUpstream

from .conftest import LiveServer, configure_routing, server_env, start_redis

pytestmark = pytest.mark.e2e

KEY = "sk-flap-123"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(api_keys={KEY}).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, redis_url: str
) -> Iterator[tuple[LiveServer, LiveServer]]:
    data: Path = tmp_path_factory.mktemp("breakers")
    env = server_env(data, ENABLE_CLOUD_ROUTING="1", REDIS_URL=redis_url)
    first = LiveServer(data_dir=data, env=env)
    first.manage("migrate", "--noinput")
    first.manage("build_demo_model")
    provider = {
        "name": "flappy", "kind": "openai", "base_url": f"{upstream.url}/v1", "key": KEY,
        "max_retries": 0, "breaker_fail_max": 2, "breaker_reset_timeout": 1.0,
        "first_byte_timeout": 2.0, "total_timeout": 10.0,
    }  # fmt: skip
    chain = [{"provider": "flappy", "model": "flap-up"}, {"local": "demo"}]
    configure_routing(
        first, {"providers": [provider], "mappings": [{"pattern": "flap", "chain": chain}]}
    )
    second = LiveServer(data_dir=data, env=env)  # same database, same Redis
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def ask(server: LiveServer) -> httpx.Response:
    body = {"model": "flap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_flapping_primary_opens_probes_and_recovers(gateways, upstream: FakeUpstream) -> None:
    a, b = gateways
    upstream.reset()
    assert ask(a).headers["x-gateway-backend"] == "flappy"

    upstream.fail_next("flap-up", status=503, count=2)
    for _ in range(2):
        response = ask(a)
        assert response.headers["x-gateway-backend"] == "local:demo"
    assert upstream.count(model="flap-up") == 3

    # Open: skipped at once, by this process and by the other one (shared in Redis).
    for server in (a, b, a):
        response = ask(server)
        assert response.headers["x-gateway-backend"] == "local:demo"
        assert "flappy/flap-up=skipped (breaker open)" in response.headers["x-gateway-attempts"]
    assert upstream.count(model="flap-up") == 3

    # A failed probe opens it again.
    time.sleep(2.2)
    upstream.fail_next("flap-up", status=503, count=1)
    assert ask(b).headers["x-gateway-backend"] == "local:demo"
    assert upstream.count(model="flap-up") == 4
    assert "skipped" in ask(a).headers["x-gateway-attempts"]
    assert upstream.count(model="flap-up") == 4

    # Recovered: the next probe succeeds, and traffic is taken back everywhere.
    time.sleep(2.2)
    assert ask(a).headers["x-gateway-backend"] == "flappy"
    assert ask(b).headers["x-gateway-backend"] == "flappy"
    assert ask(a).headers["x-gateway-attempts"] == "flappy/flap-up=ok"
    assert upstream.count(model="flap-up") == 7


def test_client_errors_never_open_the_breaker(gateways, upstream: FakeUpstream) -> None:
    a, _ = gateways
    upstream.reset()
    upstream.fail_next("flap-up", status=400, count=5)
    for _ in range(5):
        response = httpx.post(
            f"{a.url}/v1/chat/completions",
            json={"model": "flap", "messages": [{"role": "user", "content": "x"}]},
            timeout=30,
        )
        assert response.status_code == 400
    assert ask(a).headers["x-gateway-backend"] == "flappy"
    assert upstream.count(model="flap-up") == 6
