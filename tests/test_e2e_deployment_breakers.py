"""Breakers per deployment, end to end: one model of a provider in a flapping
outage never takes another model of that provider down, with the breakers in
Redis (two gateway processes) and in process."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from fake_upstream import FakeUpstream

from .conftest import LiveServer, routed_gateway

pytestmark = pytest.mark.e2e

KEY = "sk-wall-1"
UPSTREAM_KEYS = (KEY,)  # the fake upstream takes these (conftest.upstream)
HI = [{"role": "user", "content": "hello there"}]
DEAD = "fault-down-for:600"  # an outage that outlasts the test: failing, then healthy


def spec(upstream: FakeUpstream) -> dict[str, object]:
    wall = {
        "name": "wall", "kind": "openai", "base_url": f"{upstream.url}/v1", "key": KEY,
        "max_retries": 0, "breaker_fail_max": 3, "breaker_reset_timeout": 600.0,
        "first_byte_timeout": 2.0, "total_timeout": 10.0,
    }  # fmt: skip
    return {
        "providers": [wall],
        "mappings": [
            {"pattern": "flap", "chain": [{"provider": "wall", "model": DEAD},
                                          {"provider": "wall", "model": "model-b"}]},
            {"pattern": "other", "chain": [{"provider": "wall", "model": "model-c"}]},
        ],
    }  # fmt: skip


@pytest.fixture(params=["in-process", "redis"])
def gateways(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeUpstream,
) -> Iterator[list[LiveServer]]:
    env = {}
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    data = tmp_path_factory.mktemp(f"deployments-{request.param}")
    with routed_gateway(data, spec(upstream), **env) as first:
        if request.param == "in-process":
            yield [first]
            return
        second = LiveServer(data_dir=data, env=first.env)  # same database, same Redis
        second.start()
        try:
            yield [first, second]
        finally:
            second.stop()


def test_one_failing_model_never_takes_down_another_model_of_its_provider(
    gateways: list[LiveServer], upstream: FakeUpstream
) -> None:
    upstream.reset()
    clients = [
        openai.OpenAI(base_url=f"{g.url}/v1", api_key="x", max_retries=0, timeout=20)
        for g in gateways
    ]

    def ask(i: int) -> tuple[str, str, str]:
        client = clients[i % len(clients)]
        flap = client.chat.completions.with_raw_response.create(
            model="flap", messages=HI, max_tokens=4
        )
        other = client.chat.completions.with_raw_response.create(
            model="other", messages=HI, max_tokens=4
        )
        return (
            flap.headers["x-gateway-model"],
            flap.headers["x-gateway-attempts"],
            other.headers["x-gateway-model"],
        )

    # Every request is answered (an error would raise): the dead model's fallback
    # is another model of the same provider, and a third model keeps serving.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(24)))
    assert {served for served, _, _ in results} == {"model-b"}
    assert {other for _, _, other in results} == {"model-c"}
    assert upstream.count(model="model-b") == 24 and upstream.count(model="model-c") == 24
    # The dead model's breaker opened after fail_max failures (shared between the
    # processes with Redis): its attempts stop growing, and it is skipped.
    dead = upstream.count(model=DEAD)
    assert 3 <= dead <= 3 + 4 * len(gateways), dead  # at most the in-flight ones past 3
    for client in clients:
        raw = client.chat.completions.with_raw_response.create(
            model="flap", messages=HI, max_tokens=4
        )
        assert raw.headers["x-gateway-attempts"] == (
            f"wall/{DEAD}=skipped (breaker open), wall/model-b=ok"
        )
    assert upstream.count(model=DEAD) == dead
    # Shown per deployment: the dead one open, its provider and siblings closed.
    states = _breaker_states(gateways[0])
    assert states[f"wall/{DEAD}"] == 2, states
    assert states["wall/model-b"] == 0 and states["wall/model-c"] == 0, states
    assert states["wall"] == 0, states


def _breaker_states(gateway: LiveServer) -> dict[str, float]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    states = {}
    for line in text.splitlines():
        if line.startswith("gateway_breaker_state{"):
            name = line.split('backend="', 1)[1].split('"', 1)[0]
            states[name] = float(line.rsplit(" ", 1)[1])
    return states
