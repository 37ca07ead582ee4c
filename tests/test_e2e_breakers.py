"""Circuit breakers end to end: a flapping primary, shared by two processes via Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fake_upstream import FakeUpstream

from .conftest import (
    LiveServer,
    configure_routing,
    fake_upstream,
    free_port,
    read_timeout,
    server_env,
)

pytestmark = pytest.mark.e2e

KEY = "sk-flap-123"
PROBED = "probe-me"  # healthy; each test injects its faults with fail_next


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream(KEY) as server:
        yield server


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
    brittle = {**provider, "name": "brittle", "max_retries": 2, "breaker_fail_max": 1,
               "breaker_reset_timeout": 30.0, "retry_backoff": 0.01}  # fmt: skip
    cutter = {**provider, "name": "cutter", "breaker_reset_timeout": 30.0}
    slowprobe = {**provider, "name": "slowprobe", "breaker_fail_max": 1, "first_byte_timeout": 6.0}

    def fallible(pattern: str, name: str, model: str) -> dict[str, object]:
        return {
            "pattern": pattern,
            "chain": [{"provider": name, "model": model}, {"local": "demo"}],
        }

    configure_routing(
        first,
        {
            "providers": [provider, brittle, cutter, slowprobe],
            "mappings": [
                {"pattern": "flap", "chain": chain},
                fallible("brittle", "brittle", "fault-503"),
                fallible("cutter", "cutter", "fault-cut-after:2"),
                fallible("slowprobe", "slowprobe", PROBED),
            ],
        },
    )
    second = LiveServer(data_dir=data, env=env)  # same database, same Redis
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def ask(server: LiveServer, model: str = "flap") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
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


def test_retries_stop_once_the_breaker_opens(gateways, upstream: FakeUpstream) -> None:
    a, _ = gateways
    upstream.reset()
    response = ask(a, "brittle")  # max_retries 2, but the breaker opens after one failure
    assert response.headers["x-gateway-backend"] == "local:demo"
    assert upstream.count(model="fault-503") == 1
    assert response.headers["x-gateway-attempts"].startswith(
        "brittle/fault-503=503, brittle/fault-503=skipped (breaker open), local:demo/demo=ok"
    )


def test_streams_cut_after_content_count_against_the_breaker(
    gateways, upstream: FakeUpstream
) -> None:
    a, _ = gateways
    upstream.reset()
    body = {"model": "cutter", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for _ in range(2):  # fail_max 2: each cut stream is a failure, though it began well
        with httpx.stream("POST", f"{a.url}/v1/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "cutter"
            text = r.read().decode()
            # The local model finished the answer (continuation), in the same stream.
            assert '"error"' not in text and text.endswith("data: [DONE]\n\n"), text
    assert upstream.count(model="fault-cut-after:2") == 2
    response = ask(a, "cutter")
    assert response.headers["x-gateway-backend"] == "local:demo"
    assert (
        "cutter/fault-cut-after:2=skipped (breaker open)" in response.headers["x-gateway-attempts"]
    )
    assert upstream.count(model="fault-cut-after:2") == 2


def test_a_slow_probe_is_the_only_one_even_past_the_reset_timeout(
    gateways, upstream: FakeUpstream
) -> None:
    """Half-open lets one probe through, for as long as that probe takes."""
    a, b = gateways
    upstream.reset()
    upstream.fail_next(PROBED, status=503, count=1)
    opened = ask(a, "slowprobe")
    assert opened.headers["x-gateway-backend"] == "local:demo", opened.headers  # opened
    time.sleep(2.2)  # past the 1 s reset timeout (Redis keeps whole seconds): a probe is due
    # The probe's answer takes 4 s (under the 6 s first-byte timeout).
    upstream.fail_next(PROBED, fault="fault-slow-first-token:4", count=1)
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(ask, a, "slowprobe")
        wait_until(lambda: upstream.count(model=PROBED) == 2, "the probe at the upstream")
        # The probe holds the half-open token: the other process skips it, though
        # the reset timeout has passed again.
        other = ask(b, "slowprobe")
        assert other.headers["x-gateway-backend"] == "local:demo"
        assert "skipped (breaker open)" in other.headers["x-gateway-attempts"]
        assert probe.result().headers["x-gateway-backend"] == "slowprobe"
    assert upstream.count(model=PROBED) == 2  # the opening failure, and one probe
    assert ask(b, "slowprobe").headers["x-gateway-backend"] == "slowprobe"  # closed again


def test_redis_down_still_serves(gateways, upstream: FakeUpstream) -> None:
    a, _ = gateways
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    env = {**a.env, "REDIS_URL": dead}
    lonely = LiveServer(data_dir=a.data_dir, env=env)
    lonely.start()
    try:
        upstream.reset()
        for _ in range(2):
            assert ask(lonely).headers["x-gateway-backend"] == "flappy"
        assert upstream.count(model="flap-up") == 2
    finally:
        lonely.stop()
    assert "this process decides alone" in lonely.log()


def test_a_probe_whose_client_leaves_gives_its_token_back(gateways, upstream: FakeUpstream) -> None:
    a, b = gateways
    upstream.reset()
    upstream.fail_next(PROBED, status=503, count=1)
    assert ask(a, "slowprobe").headers["x-gateway-backend"] == "local:demo"  # opened
    time.sleep(2.2)  # past the 1 s reset timeout (Redis keeps whole seconds): a probe is due
    upstream.fail_next(PROBED, fault="fault-hang", count=1)  # the probe never gets an answer
    body = {"model": "slowprobe", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):  # the probe's client gives up and goes
        httpx.post(f"{a.url}/v1/chat/completions", json=body, timeout=read_timeout(0.4))
    # Not locked out until the probe's 6 s first-byte timeout: as soon as the
    # gateway sees the client gone, the token is back and the next request probes.
    # (Until then a request skips the provider without reaching the upstream.)
    wait_until(
        lambda: ask(b, "slowprobe").headers["x-gateway-backend"] == "slowprobe",
        "a new probe", seconds=5.0,
    )
    assert upstream.count(model=PROBED) == 3


def wait_until(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
