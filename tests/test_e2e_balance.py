"""Load-balanced groups end to end: a live gateway in front of two fake upstreams
that serve the same model (two "machines"), driven with the openai SDK.

Concurrent load spreads over both (least-in-flight); a failing member's share
goes to the other member before the chain's next position is asked; a stream
cut on one member is continued by the other; round-robin alternates.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from fake_upstream import FakeUpstream

from .conftest import LiveServer, fake_upstream, routed_gateway

pytestmark = pytest.mark.e2e

KEY = "sk-balance-1"
HI = [{"role": "user", "content": "hello there"}]
SLOW = "fault-slow-tokens:0.05"  # streams that overlap under concurrent load
PROVIDER = {
    "kind": "openai", "connect_timeout": 0.5, "first_byte_timeout": 2.0,
    "first_token_timeout": 2.0, "stream_idle_timeout": 1.0, "total_timeout": 20.0,
    "max_retries": 0, "breaker_fail_max": 1000, "breaker_reset_timeout": 30.0,
    "accepts_prefill": True,
}  # fmt: skip


@pytest.fixture(scope="module")
def machines() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with fake_upstream(KEY) as left, fake_upstream(KEY) as right:
        yield left, right


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, machines: tuple[FakeUpstream, FakeUpstream]
) -> Iterator[LiveServer]:
    left, right = machines
    providers = [
        {**PROVIDER, "name": "left", "base_url": f"{left.url}/v1", "key": KEY},
        {**PROVIDER, "name": "right", "base_url": f"{right.url}/v1", "key": KEY},
    ]

    def group(model: str) -> dict[str, object]:
        return {"group": [{"provider": "left", "model": model},
                          {"provider": "right", "model": model}]}  # fmt: skip

    spec = {
        "providers": providers,
        "mappings": [
            {"pattern": "pool", "chain": [group(SLOW), {"provider": "left", "model": "spare"}]},
            {"pattern": "pool-rr", "balance": "round-robin", "chain": [group("gpt-rr")]},
        ],
    }
    with routed_gateway(tmp_path_factory.mktemp("balance"), spec) as server:
        yield server


@pytest.fixture
def client(gateway: LiveServer, machines: tuple[FakeUpstream, FakeUpstream]) -> openai.OpenAI:
    for machine in machines:
        machine.reset()
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)


def stream(client: openai.OpenAI, model: str) -> tuple[str, str]:
    """(the backend that started the answer, the answer's text)."""
    with client.chat.completions.with_streaming_response.create(
        model=model, messages=HI, max_tokens=20, stream=True  # type: ignore[arg-type]
    ) as response:
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in response.parse()
            if chunk.choices
        )
        return response.headers["x-gateway-backend"], text


def test_concurrent_load_spreads_over_both_members(
    client: openai.OpenAI, machines: tuple[FakeUpstream, FakeUpstream]
) -> None:
    left, right = machines
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: stream(client, "pool"), range(16)))
    assert all(text.startswith("echo: hello there") for _, text in answers)
    served = [backend for backend, _ in answers]
    assert served.count("left") == left.count(model=SLOW)
    assert served.count("right") == right.count(model=SLOW)
    # Neither member gets less than a quarter of the load.
    assert min(left.count(model=SLOW), right.count(model=SLOW)) >= 4, served


def test_a_failing_member_hands_its_share_to_the_group_before_the_chain_moves_on(
    client: openai.OpenAI, machines: tuple[FakeUpstream, FakeUpstream]
) -> None:
    left, right = machines
    left.fail_next("*", status=503, count=None)  # the left machine is down
    try:
        answers = [stream(client, "pool") for _ in range(6)]
    finally:
        left.clear_failures()
    assert [backend for backend, _ in answers] == ["right"] * 6
    assert right.count(model=SLOW) == 6
    assert left.count(model="spare") == 0  # the chain's next position was never asked


def test_a_stream_cut_on_one_member_is_continued_by_the_other(
    client: openai.OpenAI, machines: tuple[FakeUpstream, FakeUpstream]
) -> None:
    left, right = machines
    left.fail_next("gpt-rr", fault="fault-cut-after:3", count=None)
    try:
        # Round-robin: two requests in a row start once on each member.
        answers = [stream(client, "pool-rr") for _ in range(2)]
    finally:
        left.clear_failures()
    assert sorted(backend for backend, _ in answers) == ["left", "right"]
    # The one cut on the left was finished by the right: the same whole answer.
    assert answers[0][1] == answers[1][1] and answers[0][1].startswith("echo: hello there")
    assert left.count(model="gpt-rr") == 1 and right.count(model="gpt-rr") == 2
    prefilled = [r for r in right.requests if r.json["messages"][-1]["role"] == "assistant"]
    assert len(prefilled) == 1


def test_round_robin_alternates(
    client: openai.OpenAI, machines: tuple[FakeUpstream, FakeUpstream]
) -> None:
    left, right = machines
    served = [
        client.chat.completions.with_raw_response.create(model="pool-rr", messages=HI)
        .headers["x-gateway-backend"]  # type: ignore[arg-type]
        for _ in range(6)
    ]
    assert served.count("left") == served.count("right") == 3
    assert all(a != b for a, b in itertools.pairwise(served))
    assert left.count(model="gpt-rr") == right.count(model="gpt-rr") == 3
