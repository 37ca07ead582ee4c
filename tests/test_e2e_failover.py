"""Failover end to end: local models in the chain, budgets, passthrough, shutdown.

A live gateway routes to the project's fake upstream (in this process) and to
its local demo model. Every claim is checked by counting the attempts the fake
upstream saw, not by reading configuration. Each single fault, with both SDKs,
is in test_e2e_fault_matrix.py.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from fake_upstream import FakeUpstream

from .conftest import LiveServer, routed_gateway

pytestmark = pytest.mark.e2e

OPENAI_KEY, ANTHROPIC_KEY = "sk-test-123", "sk-ant-test-456"
UPSTREAM_KEYS = (OPENAI_KEY, ANTHROPIC_KEY)  # the fake upstream takes these (conftest.upstream)
HI = [{"role": "user", "content": "hello there"}]

PROVIDER = {
    "kind": "openai", "connect_timeout": 1.0, "first_byte_timeout": 1.0,
    "stream_idle_timeout": 0.6, "total_timeout": 8.0, "max_retries": 2,
    "retry_backoff": 0.05, "retry_after_cap": 1.0, "breaker_fail_max": 1000,
    "breaker_reset_timeout": 1.0,
}  # fmt: skip

CHAINS = {
    "always-503": [("primary", "fault-503"), "demo"],
    "ratelimit-ra": [("primary", "fault-429:0.3")],
    "hang": [("primary", "fault-hang"), "demo"],
    "broken-local": ["broken", ("primary", "gpt-ok")],
    "all-fail": [("primary", "fault-503"), ("badkey", "gpt-x")],
    "claude-direct": [("ant", "claude-ok")],
    "budget": [("tight", "fault-hang"), ("primary", "gpt-ok")],
    "passthrough": [("primary", "gpt-ok")],
    "broken-only": ["broken"],
}


def routing_spec(upstream: FakeUpstream) -> dict[str, object]:
    def chain(items: list[object]) -> list[dict[str, str]]:
        return [
            {"local": item} if isinstance(item, str) else {"provider": item[0], "model": item[1]}  # type: ignore[index]
            for item in items
        ]

    return {
        "providers": [
            {"name": "primary", "base_url": f"{upstream.url}/v1", "key": OPENAI_KEY, **PROVIDER},
            {"name": "badkey", "base_url": f"{upstream.url}/v1", "key": "sk-wrong", **PROVIDER},
            {
                **PROVIDER,
                "name": "tight",
                "base_url": f"{upstream.url}/v1",
                "key": OPENAI_KEY,
                "total_timeout": 1.5,
                "first_byte_timeout": 5.0,  # the budget ends the attempt first
            },
            {
                **PROVIDER,
                "name": "ant",
                "kind": "anthropic",
                "base_url": upstream.url,
                "key": ANTHROPIC_KEY,
            },
        ],
        "local_models": [{"name": "broken", "path": "/nonexistent/model"}],
        "mappings": [{"pattern": name, "chain": chain(items)} for name, items in CHAINS.items()],
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("failover")
    # The broken local model fails in several tests: its breaker must not open here.
    with routed_gateway(
        data, routing_spec(upstream), demo=True, GATEWAY_LOCAL_BREAKER_FAIL_MAX="1000"
    ) as server:
        yield server


@pytest.fixture
def client(gateway: LiveServer, upstream: FakeUpstream) -> openai.OpenAI:
    upstream.reset()
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)


def raw(gateway: LiveServer, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": HI, "max_tokens": 8, "stream": stream}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)


def first_model(name: str) -> str:
    return CHAINS[name][0][1]  # type: ignore[index,return-value]


def assert_serving(gateway: LiveServer) -> None:
    assert httpx.get(f"{gateway.url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_503_exhausts_retries_then_falls_back_to_local(
    client, upstream, gateway, stream: bool
) -> None:
    response = raw(gateway, "always-503", stream)
    assert response.status_code == 200
    assert upstream.count(model="fault-503") == 3  # 1 + max_retries
    assert response.headers["x-gateway-backend"] == "local:demo"
    assert response.headers["x-gateway-fallbacks"] == "1"
    if not stream:
        assert response.json()["model"] == "demo"
    assert_serving(gateway)


def test_429_retry_after_is_honoured(client, upstream, gateway) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="ratelimit-ra", messages=HI)
    hits = upstream.find(model="fault-429:0.3")
    assert len(hits) == 3  # the first try and max_retries=2, no more
    # Each retry waited the upstream's Retry-After (0.3 s), not the 0.05 s backoff.
    # A lower bound only: a slow machine only makes the gaps longer.
    gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(hits)]
    assert all(gap >= 0.28 for gap in gaps), gaps
    assert info.value.response.headers.get("retry-after") is not None
    assert info.value.response.headers["x-gateway-attempts"] == ", ".join(
        ["primary/fault-429:0.3=429"] * 3
    )


def test_hang_times_out_and_falls_back(client, upstream, gateway) -> None:
    started = time.monotonic()
    response = client.chat.completions.with_raw_response.create(
        model="hang", messages=HI, max_tokens=4
    )
    elapsed = time.monotonic() - started
    assert response.parse().model == "demo"
    # A silent route stays silent: one first-byte timeout of 1s, then the next target.
    assert upstream.count(model="fault-hang") == 1
    assert response.headers["x-gateway-attempts"] == (
        "primary/fault-hang=upstream_timeout, local:demo/demo=ok"
    )
    assert elapsed > 0.9  # the timeout waited its second (a lower bound cannot flake)


@pytest.mark.parametrize("stream", [False, True])
def test_local_failure_falls_back_to_the_cloud(client, upstream, gateway, stream: bool) -> None:
    response = raw(gateway, "broken-local", stream)
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "primary"
    assert response.headers["x-gateway-attempts"].startswith(
        "local:broken/broken=model_load_failed"
    )
    assert upstream.count(model="gpt-ok") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_engine_failure_alone_is_a_5xx_with_a_message(gateway, stream: bool) -> None:
    response = raw(gateway, "broken-only", stream)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "'broken' failed to load" in error["message"]
    assert_serving(gateway)


def test_all_failing_returns_the_most_meaningful_error(client, upstream, gateway) -> None:
    response = raw(gateway, "all-fail")
    assert response.status_code == 503
    error = response.json()["error"]
    assert "HTTP 503" in error["message"]
    assert "badkey" in response.headers["x-gateway-attempts"]
    assert upstream.count(model="gpt-x") == 1


def test_anthropic_sdk_is_not_needed_for_cross_protocol(client, upstream, gateway) -> None:
    reply = client.chat.completions.create(model="claude-direct", messages=HI, max_tokens=5)
    assert reply.choices[0].message.content
    sent = upstream.find(model="claude-ok")[0]
    assert sent.path == "/v1/messages"
    assert sent.json["max_tokens"] == 5
    assert sent.headers["anthropic-version"]


def test_total_budget_bounds_the_whole_request(client, upstream, gateway) -> None:
    started = time.monotonic()
    response = raw(gateway, "budget")
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    # The 1.5s budget cut the attempt short (its first-byte timeout is 5s), and
    # no other target was tried.
    assert "tight: budget_exhausted" in error["message"], error
    assert response.headers["x-gateway-attempts"].count("=") == 1, response.headers
    assert elapsed > 1.4
    assert upstream.count(model="fault-hang") == 1
    assert upstream.count(model="gpt-ok") == 0


PASSTHROUGH_BODY = {
    "model": "passthrough",
    "messages": [{"role": "user", "content": "hi", "name": "alice"}],
    "max_tokens": 6,
    "logit_bias": {"50256": -100},
    "vendor_extension": {"nested": [1, 2, {"deep": True}]},
}


def _strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("id", "created")}


@pytest.mark.parametrize("stream", [False, True])
def test_same_protocol_is_passed_through_untouched(upstream, gateway, stream: bool) -> None:
    body = {**PASSTHROUGH_BODY, "stream": stream}
    upstream.reset()
    via_gateway = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert via_gateway.status_code == 200
    sent = upstream.find(model="gpt-ok")[0].json
    expected = {**body, "model": "gpt-ok"}  # untouched but the model name ...
    if stream:  # ... and the usage the gateway needs for its own accounting
        expected["stream_options"] = {"include_usage": True}
    assert sent == expected
    # What the client gets is what the upstream answers to the client's own body.
    direct = httpx.post(
        f"{upstream.url}/v1/chat/completions",
        json={**body, "model": "gpt-ok"},
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
        timeout=30,
    )
    if not stream:
        assert _strip(via_gateway.json()) == _strip(direct.json())
        return

    def events(text: str) -> list[object]:
        lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        return [line if line == "[DONE]" else _strip(json.loads(line)) for line in lines]

    assert events(via_gateway.text) == events(direct.text)


def test_gateway_survived(gateway) -> None:
    assert_serving(gateway)


def test_clean_shutdown_closes_the_upstream_pools(gateway: LiveServer, upstream) -> None:
    second = LiveServer(data_dir=gateway.data_dir, env=gateway.env)
    second.start()
    try:
        for _ in range(2):
            assert raw(second, "claude-direct").status_code == 200
        # Keep-alive: both requests went over one pooled connection.
        hits = upstream.find(model="claude-ok")[-2:]
        assert hits[0].connection == hits[1].connection
    finally:
        second.stop()
    assert second.process is not None and second.process.returncode == 0
    assert "closed 1 upstream connection pool(s)" in second.log()


def test_streamed_passthrough_still_counts_tokens(gateway: LiveServer, upstream) -> None:
    """The gateway asks for usage on its own behalf: the request log and key limits
    see real token counts, and the client that did not ask sees no usage chunk."""
    body = {"model": "passthrough", "messages": HI, "max_tokens": 6, "stream": True}
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    before = _output_tokens(metrics)
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    assert '"usage"' not in response.text and "data: [DONE]" in response.text
    deadline = time.monotonic() + 5
    while _output_tokens(httpx.get(f"{gateway.url}/metrics", timeout=10).text) == before:
        assert time.monotonic() < deadline, "no output tokens were counted"
        time.sleep(0.05)
    assert _output_tokens(httpx.get(f"{gateway.url}/metrics", timeout=10).text) - before == 6


def _output_tokens(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_output_tokens_total{") and 'model="passthrough"' in line
    )
