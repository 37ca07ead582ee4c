"""Circuit breakers (routing.breakers): counting, opening, probing, closing, per
deployment and per provider, in memory and in a real Redis, on an injected clock
(no sleeps)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pybreaker
import pytest

from routing.breakers import Breakers, BreakerSettings, Gate

from .conftest import free_port, redis_server


class Clock:
    """Wall seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def redis_url_for_units(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis-units")) as url:
        yield url


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[object]:
    """Breakers on a shared clock: in memory, or in a fresh Redis database."""
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url_for_units")
        import redis

        redis.Redis.from_url(url).flushdb()
    clock = Clock()

    def factory() -> tuple[Breakers, Clock]:
        return Breakers(url, clock=clock), clock

    yield factory


async def test_counts_opens_probes_and_closes(make) -> None:  # type: ignore[no-untyped-def]
    box, clock = make()
    config = BreakerSettings(fail_max=3, reset_timeout=30)
    assert await box.admit("b", config)
    for _ in range(2):
        await box.record("b", config, ok=False)
    await box.record("b", config, ok=True)  # a success resets the count
    for _ in range(2):
        await box.record("b", config, ok=False)
    assert box.state("b") == pybreaker.STATE_CLOSED  # 2 in a row, not 4
    await box.record("b", config, ok=False)
    assert box.state("b") == pybreaker.STATE_OPEN
    assert await box.admit("b", config) is None
    clock.advance(29.9)
    assert await box.admit("b", config) is None  # not yet
    clock.advance(0.2)
    probe = await box.admit("b", config)
    assert probe is not None and probe.probe  # the one probe
    assert box.state("b") == pybreaker.STATE_HALF_OPEN
    assert await box.admit("b", config) is None  # only one probe at a time
    await box.record("b", config, ok=False, probe=True)
    assert box.state("b") == pybreaker.STATE_OPEN  # the probe failed: open again
    clock.advance(30.1)
    assert await box.admit("b", config)
    await box.record("b", config, ok=True, probe=True)
    assert box.state("b") == pybreaker.STATE_CLOSED
    admitted = await box.admit("b", config)
    assert admitted is not None and not admitted.probe


async def test_a_probe_holds_its_token_for_its_whole_budget(make) -> None:  # type: ignore[no-untyped-def]
    """A slow probe must not let a second one through when the reset timeout passes."""
    box, clock = make()
    config = BreakerSettings(fail_max=1, reset_timeout=1)
    await box.record("b", config, ok=False)
    clock.advance(1.5)
    assert await box.admit("b", config, hold=5.0)  # the probe, with 5 s to answer
    clock.advance(1.5)  # past the reset timeout, the probe still running
    assert await box.admit("b", config, hold=5.0) is None
    await box.record("b", config, ok=None)  # another request's outcome: the token stays
    assert await box.admit("b", config, hold=5.0) is None
    await box.record("b", config, ok=None, probe=True)  # no verdict (budget spent): token back
    assert await box.admit("b", config)
    await box.record("b", config, ok=True, probe=True)
    assert box.state("b") == pybreaker.STATE_CLOSED


async def test_processes_sharing_redis_share_breakers(redis_url_for_units: str) -> None:
    import redis

    redis.Redis.from_url(redis_url_for_units).flushdb()
    clock = Clock()
    one, two = (Breakers(redis_url_for_units, clock=clock) for _ in range(2))
    config = BreakerSettings(fail_max=4, reset_timeout=10)
    for box in (one, two, one, two):  # failures counted across processes
        await box.record("shared", config, ok=False)
    assert await one.admit("shared", config) is None
    assert await two.admit("shared", config) is None
    assert two.state("shared") == pybreaker.STATE_OPEN
    clock.advance(11)
    assert await one.admit("shared", config)  # one probe, in either process
    assert await two.admit("shared", config) is None
    await one.record("shared", config, ok=True, probe=True)
    admitted = await two.admit("shared", config)
    assert admitted is not None and not admitted.probe  # closed for both
    assert two.state("shared") == pybreaker.STATE_CLOSED


async def test_a_deployment_failure_leaves_its_provider_and_siblings_alone(make) -> None:  # type: ignore[no-untyped-def]
    box, _ = make()
    config = BreakerSettings(fail_max=2, reset_timeout=30)
    dead, sibling = Gate(box, config, "p/a", "p"), Gate(box, config, "p/b", "p")
    for _ in range(3):
        if await dead.admit(hold=1):
            await dead.record(False)  # a 5xx: this deployment only
        assert await sibling.admit(hold=1)  # the other model of the provider still serves
        await sibling.record(True)
    assert box.state("p/a") == pybreaker.STATE_OPEN
    assert box.state("p") == pybreaker.STATE_CLOSED
    assert box.state("p/b") == pybreaker.STATE_CLOSED
    assert not await dead.admit(hold=1)


async def test_connection_failures_open_the_whole_provider(make) -> None:  # type: ignore[no-untyped-def]
    box, clock = make()
    config = BreakerSettings(fail_max=2, reset_timeout=30)
    first, second = Gate(box, config, "p/a", "p"), Gate(box, config, "p/b", "p")
    for gate in (first, second):
        assert await gate.admit(hold=1)
        await gate.record(False, provider_too=True)  # connection refused
    assert box.state("p") == pybreaker.STATE_OPEN
    assert not await Gate(box, config, "p/c", "p").admit(hold=1)  # no model of it is tried
    clock.advance(31)
    probe = Gate(box, config, "p/c", "p")
    assert await probe.admit(hold=1)  # the provider's probe
    await probe.record(True)
    assert box.state("p") == pybreaker.STATE_CLOSED


async def test_breakers_fall_back_to_this_process_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    box = Breakers(f"redis://127.0.0.1:{free_port()}/0")  # a port nobody listens on
    config = BreakerSettings(fail_max=2, reset_timeout=30)
    assert await box.admit("b", config)
    await box.record("b", config, ok=False)
    await box.record("b", config, ok=False)
    assert not await box.admit("b", config)  # counted, in memory, and opened
    assert "this process decides alone" in caplog.text


async def test_a_redis_outage_after_start_still_counts_failures(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        box = Breakers(url)
        config = BreakerSettings(fail_max=2, reset_timeout=30)
        assert await box.admit("r", config)  # created while Redis was up
    await box.record("r", config, ok=False)
    await box.record("r", config, ok=False)
    assert not await box.admit("r", config)  # opened, in this process


@pytest.mark.django_db
def test_healthcheck_shows_breakers_per_deployment(
    settings: Any, redis_url_for_units: str, demo_model_path: Path
) -> None:
    """With the breakers in Redis, `healthcheck --json` reads every deployment's."""
    import io
    import json

    import redis
    from asgiref.sync import async_to_sync
    from django.core.management import call_command

    from routing.breakers import reset_breakers
    from routing.models import LocalModel

    redis.Redis.from_url(redis_url_for_units).flushdb()
    settings.REDIS_URL = redis_url_for_units
    reset_breakers()
    try:
        LocalModel.objects.create(name="demo", path=str(demo_model_path))
        shared = Breakers(redis_url_for_units)  # a gateway process, opening it
        async_to_sync(shared.record)("local:demo", BreakerSettings(fail_max=1), ok=False)
        out = io.StringIO()
        call_command("healthcheck", "--json", stdout=out)
        document = json.loads(out.getvalue())
        assert document["breakers"] == {"local:demo": "open"}
    finally:
        reset_breakers()


@pytest.mark.django_db
def test_the_provider_page_shows_its_breakers_per_deployment(admin_client: Any) -> None:
    from asgiref.sync import async_to_sync

    from routing.breakers import breakers
    from routing.models import BackendMapping, MappingTarget, Provider

    provider = Provider.objects.create(name="wall", kind="openai", base_url="http://127.0.0.1:9/v1")
    mapping = BackendMapping.objects.create(pattern="m*")
    for position, model in enumerate(("model-a", "model-b")):
        MappingTarget.objects.create(
            mapping=mapping, position=position, provider=provider, upstream_model=model
        )
    async_to_sync(breakers().record)("wall/model-a", BreakerSettings(fail_max=1), ok=False)
    page = admin_client.get(f"/admin/routing/provider/{provider.pk}/change/").content.decode()
    assert "wall: closed, wall/model-a: open, wall/model-b: closed" in page
    assert 'name="first_token_timeout"' in page and 'name="accepts_prefill"' in page


async def test_a_success_on_a_closed_breaker_writes_nothing(redis_url_for_units: str) -> None:
    """Most requests succeed on a closed breaker: their decision reads the state and
    changes nothing, so nothing is written back (one Redis round trip, not two)."""
    import redis

    client = redis.Redis.from_url(redis_url_for_units)
    client.flushdb()

    def writes() -> int:
        stats = client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("hset", "hincrby"))

    box = Breakers(redis_url_for_units, clock=Clock())
    config = BreakerSettings(fail_max=3, reset_timeout=10)
    await box.record("quiet", config, ok=False)
    before = writes()
    await box.record("quiet", config, ok=True)  # the failure count goes back to 0: written
    assert writes() == before + 1
    before = writes()
    for _ in range(5):
        assert await box.admit("quiet", config)
        await box.record("quiet", config, ok=True)
    assert writes() == before
    assert box.state("quiet") == pybreaker.STATE_CLOSED
    await box.record("quiet", config, ok=False)  # and a failure is still counted
    assert writes() == before + 1
    assert client.hget("gateway:breaker:quiet", "counter") == b"1"
