"""A whole (non-streamed) answer that is slow after its head: timed by what is
left of the request's total budget, with the stream-idle limit between its
bytes, never by the first-byte timeout. Against the fake upstream's
`fault-slow-body:S` (head and half the body, the rest S seconds later): the
cloud client alone, a model server's client, and a live gateway with the
official `openai` SDK."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from fake_upstream import FakeUpstream
from inference.cloud.config import ProviderConfig, RetryPolicy, Timeouts
from inference.cloud.errors import UpstreamError
from inference.cloud.pool import pool
from inference.cloud.transport import post_json
from inference.types import ChatRequest, Message, TextPart

from .conftest import LiveServer, routed_gateway, single_try_provider

KEY = "sk-slow-body"
UPSTREAM_KEYS = (KEY,)
FIRST_BYTE = 0.3  # far below every delay the upstream is asked for
SLOW = 1.0  # the body's pause: over the first-byte limit, well within the budget
BUDGET = 6.0
PAST = 60.0  # a pause no budget here waits for


@pytest.fixture
async def closing_pool() -> AsyncIterator[None]:
    """The providers' connections this test's loop opened, closed with it."""
    yield
    await pool.aclose()


def config(upstream: FakeUpstream, *, total: float = BUDGET, idle: float = 30.0) -> ProviderConfig:
    timeouts = Timeouts(first_byte=FIRST_BYTE, stream_idle=idle, total=total)
    return ProviderConfig("slow", "openai", f"{upstream.url}/v1", KEY, timeouts=timeouts,
                          retry=RetryPolicy(max_retries=0))  # fmt: skip


def body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.mark.usefixtures("closing_pool")
async def test_a_slow_body_within_the_budget_is_read(upstream: FakeUpstream) -> None:
    started = time.monotonic()
    data = await post_json(config(upstream), "/chat/completions", body(f"fault-slow-body:{SLOW}"),
                           time.monotonic() + BUDGET)  # fmt: skip
    assert time.monotonic() - started >= SLOW  # it did wait past the first-byte limit
    assert data["choices"][0]["message"]["content"]


@pytest.mark.usefixtures("closing_pool")
async def test_a_body_past_the_budget_is_the_budget_spent(upstream: FakeUpstream) -> None:
    with pytest.raises(UpstreamError) as caught:
        await post_json(config(upstream), "/chat/completions", body(f"fault-slow-body:{PAST}"),
                        time.monotonic() + 1.0)  # fmt: skip
    assert caught.value.failure == "budget"
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")


@pytest.mark.usefixtures("closing_pool")
async def test_without_a_deadline_the_providers_total_applies(upstream: FakeUpstream) -> None:
    with pytest.raises(UpstreamError) as caught:
        await post_json(config(upstream, total=1.0), "/chat/completions",
                        body(f"fault-slow-body:{PAST}"), None)  # fmt: skip
    assert caught.value.failure == "budget"


@pytest.mark.usefixtures("closing_pool")
async def test_a_stalled_body_times_out_by_the_idle_limit(upstream: FakeUpstream) -> None:
    # Half the body, then silence: the content did not come (no retry, next target).
    with pytest.raises(UpstreamError) as caught:
        await post_json(config(upstream, idle=0.2), "/chat/completions",
                        body("fault-stall-after:3"), time.monotonic() + BUDGET)  # fmt: skip
    assert caught.value.failure == "first_token_timeout"
    assert "stalled" in caught.value.message


@pytest.mark.usefixtures("closing_pool")
async def test_a_model_servers_whole_answer_has_the_requests_budget(
    upstream: FakeUpstream, settings: Any
) -> None:
    """A model server sends a whole answer's head once it is generated: the
    local first-token limit must not cut it, the request's budget does."""
    from routing.backends import local_backend
    from routing.models import LocalModel

    settings.GATEWAY_LOCAL_MODELS_URL = f"{upstream.url}/v1"
    settings.GATEWAY_LOCAL_MODELS_KEY = KEY
    settings.GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT = FIRST_BYTE
    request = ChatRequest("m", [Message("user", [TextPart("hi")])], max_tokens=4)
    slow = LocalModel(name=f"fault-slow-first-token:{SLOW}")
    backend = local_backend(slow, time.monotonic() + BUDGET)
    result = await backend.complete(request)
    assert result.content
    backend = local_backend(LocalModel(name=f"fault-slow-body:{PAST}"), time.monotonic() + 1.0)
    with pytest.raises(UpstreamError) as caught:
        await backend.complete(request)
    assert caught.value.failure == "budget"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    provider = single_try_provider(KEY, name="slow", base_url=f"{upstream.url}/v1",
                                   first_byte_timeout=FIRST_BYTE, total_timeout=3.0,
                                   stream_idle_timeout=30.0)  # fmt: skip
    mappings = [{"pattern": name, "chain": [{"provider": "slow", "model": model}]}
                for name, model in (("slow-ok", f"fault-slow-body:{SLOW}"),
                                    ("slow-over", f"fault-slow-body:{PAST}"))]  # fmt: skip
    spec = {"providers": [provider], "mappings": mappings}
    with routed_gateway(tmp_path_factory.mktemp("slow-body"), spec) as server:
        yield server


@pytest.mark.e2e
def test_through_the_gateway_with_the_openai_sdk(gateway: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)
    hi = [{"role": "user", "content": "hi"}]
    raw = client.chat.completions.with_raw_response.create(model="slow-ok", messages=hi,
                                                           max_tokens=4)  # fmt: skip
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-attempts"] == f"slow/fault-slow-body:{SLOW}=ok"
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="slow-over", messages=hi, max_tokens=4)
    assert caught.value.status_code == 504
    trail = caught.value.response.headers.get("x-gateway-attempts")
    assert trail == f"slow/fault-slow-body:{PAST}=budget_exhausted", trail


def test_a_model_servers_config_is_built_once_per_setting(settings: Any) -> None:
    """served_elsewhere is on every request to a local model behind a model server:
    one config per model and settings, rebuilt when a setting changes."""
    from routing.backends import served_elsewhere
    from routing.models import LocalModel

    settings.GATEWAY_LOCAL_MODELS_URL = "http://127.0.0.1:9/v1"
    settings.GATEWAY_LOCAL_MODELS_KEY = KEY
    model = LocalModel(name="demo")
    first = served_elsewhere(model)
    assert served_elsewhere(LocalModel(name="demo")) is first
    assert (first.name, first.kind, first.base_url, first.api_key) == (
        "local:demo", "model-server", "http://127.0.0.1:9/v1", KEY
    )  # fmt: skip
    settings.GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT = 7.0
    changed = served_elsewhere(model)
    assert changed is not first and changed.timeouts.first_token == 7.0
    assert served_elsewhere(LocalModel(name="other")).name == "local:other"
