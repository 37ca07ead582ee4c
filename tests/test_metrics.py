"""GET /metrics: what real requests to a live gateway leave in the exposition.

The gateway routes to the local demo model and to the project's fake upstream
(in this process), so every figure is checked against what the clients saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import Client, RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from fake_upstream import FakeUpstream
from gateway import metrics

from .conftest import LiveServer, routed_gateway, single_try_provider

TOKEN = "metrics-secret-123"
UPSTREAM_KEY = "sk-upstream-789"
UPSTREAM_KEYS = (UPSTREAM_KEY,)  # the fake upstream takes these (conftest.upstream)
CLIENT_KEY = {"Authorization": "Bearer sk-client-anything"}
HI = [{"role": "user", "content": "hello there"}]

PROVIDER = single_try_provider(UPSTREAM_KEY)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    base = f"{upstream.url}/v1"
    spec = {
        "providers": [
            {**PROVIDER, "name": "flaky", "base_url": base},
            {**PROVIDER, "name": "fragile", "base_url": base, "breaker_fail_max": 1},
        ],
        "mappings": [
            {"pattern": "fallback", "chain": [
                {"provider": "flaky", "model": "fault-503"}, {"local": "demo"}]},
            {"pattern": "alone-503", "chain": [{"provider": "flaky", "model": "fault-503"}]},
            {"pattern": "fragile", "chain": [
                {"provider": "fragile", "model": "fault-503"}, {"local": "demo"}]},
        ],
    }  # fmt: skip
    data = tmp_path_factory.mktemp("metrics")
    with routed_gateway(data, spec, demo=True, GATEWAY_METRICS_TOKEN=TOKEN) as server:
        yield server


def chat(gateway: LiveServer, model: str, *, stream: bool = False) -> tuple[int, dict[str, int]]:
    """Status and usage as the client saw them."""
    body: dict[str, Any] = {"model": model, "messages": HI, "max_tokens": 6, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers=CLIENT_KEY, timeout=60
    )
    if response.status_code != 200:
        return response.status_code, {}
    if not stream:
        usage = response.json()["usage"]
    else:
        import json

        chunks = [
            json.loads(line[6:])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        usage = chunks[-1]["usage"]
    return 200, {"input": usage["prompt_tokens"], "output": usage["completion_tokens"]}


def scrape(gateway: LiveServer) -> dict[str, list[Any]]:
    response = httpx.get(
        f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float:
    """The value of the one sample with exactly these labels (0 when absent)."""
    family = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    family = family.removesuffix("_bucket")
    found = [
        s.value
        for s in families.get(family, [])
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, f"{sample} {labels} matches {len(found)} samples"
    return found[0] if found else 0.0


@pytest.mark.e2e
def test_requests_leave_counters_histograms_and_gauges(gateway: LiveServer) -> None:
    plain = [chat(gateway, "demo") for _ in range(2)]
    streamed = chat(gateway, "demo", stream=True)
    assert [s for s, _ in plain] == [200, 200] and streamed[0] == 200
    missing, _ = chat(gateway, "no-such-model-4711")
    assert missing == 404
    fell_back, fallback_usage = chat(gateway, "fallback")
    assert fell_back == 200
    failed, _ = chat(gateway, "alone-503", stream=True)
    assert failed >= 500
    assert chat(gateway, "fragile")[0] == 200  # opens fragile's breaker (fail_max 1)
    assert chat(gateway, "fragile")[0] == 200  # skips it

    m = scrape(gateway)
    demo = {"protocol": "openai", "endpoint": "chat.completions", "backend": "local:demo"}
    assert value(m, "gateway_requests_total", model="demo", status="200", stream="false",
                 **demo) == 2  # fmt: skip
    assert value(m, "gateway_requests_total", model="demo", status="200", stream="true",
                 **demo) == 1  # fmt: skip
    # A name that resolved to no route is not a label of its own.
    assert value(m, "gateway_requests_total", model="other", backend="none", status="404") == 1
    assert not any(s.labels.get("model") == "no-such-model-4711" for f in m.values() for s in f)
    assert value(m, "gateway_requests_total", model="fallback", backend="local:demo",
                 status="200") == 1  # fmt: skip
    assert value(m, "gateway_requests_total", model="alone-503", backend="none",
                 status=str(failed), stream="true") == 1  # fmt: skip

    # Histograms: one observation per request, buckets cumulative up to +Inf.
    latency = {"model": "demo", "backend": "local:demo", "stream": "false"}
    assert value(m, "gateway_request_duration_seconds_count", **latency) == 2
    assert value(m, "gateway_request_duration_seconds_bucket", le="+Inf", **latency) == 2
    assert 0 < value(m, "gateway_request_duration_seconds_sum", **latency) < 60
    ttft = {"model": "demo", "backend": "local:demo", "protocol": "openai"}
    assert value(m, "gateway_time_to_first_token_seconds_count", **ttft) == 1  # streamed only
    assert value(m, "gateway_time_to_first_token_seconds_bucket", le="+Inf", **ttft) == 1

    # Tokens: exactly what the clients were told.
    usages = [u for _, u in [*plain, streamed]]
    assert value(m, "gateway_input_tokens_total", **ttft) == sum(u["input"] for u in usages)
    assert value(m, "gateway_output_tokens_total", **ttft) == sum(u["output"] for u in usages)
    fallback_tokens = {"model": "fallback", "backend": "local:demo"}
    assert value(m, "gateway_output_tokens_total", **fallback_tokens) == fallback_usage["output"]

    # Upstream errors by backend and outcome; fallbacks by model.
    assert value(m, "gateway_upstream_errors_total", backend="flaky", outcome="503") == 2
    assert value(m, "gateway_upstream_errors_total", backend="fragile", outcome="503") == 1
    assert value(m, "gateway_upstream_errors_total", backend="fragile", outcome="breaker_open") == 1
    assert value(m, "gateway_upstream_errors_total", backend="local:demo") == 0
    assert value(m, "gateway_fallbacks_total", model="fallback") == 1
    assert value(m, "gateway_fallbacks_total", model="fragile") == 2
    assert value(m, "gateway_fallbacks_total", model="demo") == 0

    # Read at scrape time: every configured backend's breaker, and the engine.
    assert value(m, "gateway_breaker_state", backend="local:demo", kind="local") == 0
    assert value(m, "gateway_breaker_state", backend="flaky", kind="provider") == 0
    # Per deployment: the failing model's breaker is open, its provider's own is not.
    assert value(m, "gateway_breaker_state", backend="fragile/fault-503", kind="provider") == 2
    assert value(m, "gateway_breaker_state", backend="fragile", kind="provider") == 0
    assert value(m, "gateway_engine_resident_models") == 1
    assert value(m, "gateway_engine_queued_requests") == 0
    assert value(m, "gateway_engine_active_sequences") == 0


@pytest.mark.e2e
def test_token_is_required_when_set(gateway: LiveServer) -> None:
    url = f"{gateway.url}/metrics"
    assert httpx.get(url, timeout=10).status_code == 401  # loopback is not enough then
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert "gateway_requests" not in wrong.text
    # An API client's key is not a metrics token, and /metrics is no API route.
    assert httpx.get(url, headers=CLIENT_KEY, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.5", False), ("192.168.1.20", False), ("2001:db8::1", False), ("", False)],
)  # fmt: skip
@override_settings(GATEWAY_METRICS_TOKEN="")
def test_without_a_token_only_loopback_may_scrape(address: str, allowed: bool) -> None:
    request = RequestFactory().get("/metrics", REMOTE_ADDR=address)
    refused = metrics.refusal(request)
    assert (refused is None) is allowed
    if refused is not None:
        assert refused.status_code == 403


@pytest.mark.django_db
@override_settings(GATEWAY_METRICS_TOKEN="")
def test_metrics_view_over_http_without_a_token() -> None:
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"gateway_requests", "gateway_engine_queued_requests"} <= names


@override_settings(GATEWAY_METRICS_TOKEN="s3cret")
def test_token_check_is_exact() -> None:
    def status(header: str | None) -> int | None:
        headers = {"HTTP_AUTHORIZATION": header} if header is not None else {}
        refused = metrics.refusal(RequestFactory().get("/metrics", **headers))
        return None if refused is None else refused.status_code

    assert status("Bearer s3cret") is None
    assert status("bearer s3cret") is None
    assert status(None) == 401
    assert status("Bearer s3cre") == 401
    assert status("Bearer s3cret2") == 401
    assert status("Basic s3cret") == 401


def test_model_labels_are_bounded() -> None:
    label = metrics.BoundedLabel(2)
    assert [label(n) for n in ("a", "b", "c", "a", "x" * 300)] == ["a", "b", "other", "a", "other"]
