"""Prices, costs and per-key budgets: the pricing of a served request, the budget
counters (in memory and in Redis, seeded from the usage rollup), and a live
gateway refusing a key over its budget with 429 budget_exceeded in both SDKs'
envelopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from django.utils import timezone

from gateway.keys import budgets
from gateway.keys.services import create_api_key
from gateway.usage.services import write_request_logs
from routing import pricing, selectors
from routing.models import BackendMapping, LocalModel, MappingTarget, Provider

from .conftest import LiveServer, make_api_keys, redis_server, routed_gateway, run_in_shell

PRICES = {"input_price": 100_000, "output_price": 200_000}  # USD per million: a few USD a call


@pytest.mark.django_db
def test_a_request_costs_its_tokens_at_the_serving_targets_prices(
    settings: Any, demo_model_path: Path
) -> None:
    settings.ENABLE_CLOUD_ROUTING = True
    LocalModel.objects.create(name="demo", path=str(demo_model_path), input_price="0.5",
                              output_price="1.5")  # fmt: skip
    cloud = Provider.objects.create(name="cloud", kind="openai")
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    MappingTarget.objects.create(mapping=mapping, provider=cloud, upstream_model="gpt-4o",
                                 input_price="2.5", output_price="10", position=0)  # fmt: skip
    MappingTarget.objects.create(mapping=mapping, provider=cloud, position=1)  # not priced
    snapshot = selectors.load_snapshot()
    priced = pricing.prices_for(snapshot, "gpt-x", "cloud", "gpt-4o")
    assert priced == (Decimal("2.5"), Decimal("10"))
    assert pricing.cost(priced, 1_000_000, 100_000) == Decimal("3.5")
    assert pricing.prices_for(snapshot, "gpt-x", "cloud", "gpt-x") is None
    assert pricing.cost(None, 10**6, 10**6) == 0
    local = pricing.prices_for(snapshot, "demo", "local:demo", "demo")
    assert pricing.cost(local, 2000, 1000) == Decimal("0.0025")


def rollup_spend(key_id: int, usd: str) -> None:
    write_request_logs([{
        "created_at": timezone.now(), "api_key_id": key_id, "protocol": "openai",
        "endpoint": "chat.completions", "requested_model": "demo", "status": 200,
        "latency_ms": 1.0, "cost": Decimal(usd),
    }])  # fmt: skip


async def _check(key_id: int, **budget: Decimal | None) -> str | None:
    try:
        await budgets.check(key_id, "gw-test", budget)
    except budgets.RateLimited as refusal:
        assert refusal.code == "budget_exceeded" and refusal.status == 429
        return refusal.message
    return None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_budget_counters_are_seeded_from_the_log_and_charged(
    backend: str, settings: Any, tmp_path: Path
) -> None:
    from asgiref.sync import sync_to_async

    key, _ = await sync_to_async(create_api_key)("spender")
    await sync_to_async(rollup_spend)(key.pk, "4.00")  # spent before this process started
    with redis_server(tmp_path) as url:
        settings.REDIS_URL = url if backend == "redis" else ""
        budgets.reset()
        try:
            assert await _check(key.pk, day=Decimal(5)) is None  # 4 of 5: admitted
            budgets.charge(key.pk, Decimal("0.75"))
            await _drain()
            assert await _check(key.pk, day=Decimal(5)) is None  # 4.75
            budgets.charge(key.pk, Decimal("0.25"))
            await _drain()
            message = await _check(key.pk, day=Decimal(5))
            assert message is not None and "budget_exceeded" in message and "per day" in message
            assert await _check(key.pk, day=Decimal(6), month=Decimal(5)) is not None
            assert await _check(key.pk, month=Decimal(100)) is None
        finally:
            budgets.reset()


async def _drain() -> None:
    store = budgets.store()
    if isinstance(store, budgets.RedisSpend):
        await store.redis.settle()


async def test_redis_spend_writes_what_is_in_flight_when_closed(tmp_path: Path) -> None:
    """A clean shutdown (gateway.startup) closes the store: the charges still on
    their way reach Redis first, and the store works again after (a new client)."""
    with redis_server(tmp_path) as url:
        spend, other = budgets.RedisSpend(url), budgets.RedisSpend(url)  # two processes
        assert await spend.seed("gateway:spend:1:day", 100, 60) == 100
        spend.add("gateway:spend:1:day", 25, 60)  # a finished request's cost: a task
        await spend.aclose()
        assert await other.get("gateway:spend:1:day") == 125
        spend.add("gateway:spend:1:day", 5, 60)
        await spend.aclose()
        assert await other.get("gateway:spend:1:day") == 130
        await other.aclose()
        await budgets.aclose()  # no store made yet in this process: nothing to do


@pytest.mark.django_db(transaction=True)
async def test_budgets_admit_while_redis_is_down(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    budgets.reset()
    try:
        assert await _check(1, day=Decimal(1)) is None
        assert await _check(1, day=Decimal(1)) is None
        assert caplog.text.count("budgets not enforced") == 1  # logged, not per request
        budgets.charge(1, Decimal(1))  # a failed write is logged too, never raised
        await _drain()
        await budgets.aclose()
    finally:
        budgets.reset()


def test_periods_end_at_utc_midnight_and_month_end() -> None:
    day, month = budgets.periods(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)).values()
    assert day[0] == "2026-12-31" and day[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert month[0] == "2026-12" and month[1] == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def priced_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("budgets")
    spec = {"local_models": [{"name": "demo", "path": "demo", **PRICES}]}
    with redis_server(data) as url, routed_gateway(
        data, spec, demo=True, REDIS_URL=url, GATEWAY_REQUIRE_API_KEYS="1"
    ) as server:
        yield server


_COSTS = """
import json
from gateway.usage.models import RequestLog, UsageDay
print("COSTS=" + json.dumps([str(c) for c in RequestLog.objects.values_list("cost", flat=True)]))
"""


def test_a_key_over_its_budget_gets_429_budget_exceeded_in_both_protocols(
    priced_gateway: LiveServer,
) -> None:
    base = priced_gateway.url
    [secret] = make_api_keys(priced_gateway, {"capped": {"budget_per_day": "3"}}).values()
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    refused = None
    for _ in range(20):  # each call costs a few USD: the budget runs out within a few
        try:
            client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
            )
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None, "the budget was never enforced"
    body = refused.response.json()
    assert body["error"]["code"] == "budget_exceeded"
    assert body["error"]["type"] == "rate_limit_error"
    assert int(refused.response.headers["retry-after"]) > 0
    claude = anthropic.Anthropic(base_url=base, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="demo", max_tokens=4,
                               messages=[{"role": "user", "content": "Hello"}])  # fmt: skip
    error = caught.value.response.json()
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
    assert error["error"]["message"].startswith("budget_exceeded")
    # Another key is not held back, and the log priced what was served.
    [other] = make_api_keys(priced_gateway, {"free": {}}).values()
    ok = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {other}"},
                    json={"model": "demo", "max_tokens": 2,
                          "messages": [{"role": "user", "content": "Hi"}]}, timeout=60)  # fmt: skip
    assert ok.status_code == 200
    for _ in range(30):  # rows are written off the request path
        out = run_in_shell(priced_gateway, _COSTS, doing="reading costs")
        costs = json.loads(next(x for x in out.splitlines() if x.startswith("COSTS="))[6:])
        if any(Decimal(c) > 1 for c in costs):
            break
    assert any(Decimal(c) > 1 for c in costs), costs


@pytest.mark.django_db
def test_prices_travel_in_the_yaml(demo_model_path: Path) -> None:
    from routing.config_io import export_document, import_document

    document = {
        "version": 1,
        "local_models": [{"name": "demo", "path": str(demo_model_path),
                          "prices": {"input": 0.5, "output": 1.25}}],
        "providers": [{"name": "cloud", "kind": "openai", "api_key_env": None}],
        "mappings": [{"pattern": "gpt-*", "chain": [
            {"provider": "cloud", "model": "gpt-4o", "input_price": 2.5, "output_price": 10},
            {"provider": "cloud"},
            {"local": "demo"},
        ]}],
    }  # fmt: skip
    import_document(document, {}, dry_run=False)
    local = LocalModel.objects.get(name="demo")
    assert (local.input_price, local.output_price) == (Decimal("0.5"), Decimal("1.25"))
    first, unpriced, _ = MappingTarget.objects.order_by("position")
    assert (first.input_price, first.output_price) == (Decimal("2.5"), Decimal("10"))
    assert unpriced.input_price is None and unpriced.output_price is None
    exported, _ = export_document()
    chain = exported["mappings"][0]["chain"]
    assert chain[0]["input_price"] == Decimal("2.5") and "input_price" not in chain[1]
    assert exported["local_models"][0]["prices"] == {"input": Decimal("0.5"),
                                                     "output": Decimal("1.25")}  # fmt: skip
    from routing.config_schema import dump_yaml, load_yaml

    again = import_document(load_yaml(dump_yaml(exported)), {}, dry_run=True)
    assert again.changes == []  # a round trip changes nothing
    document["mappings"][0]["chain"].append({"provider": "cloud", "model": "gpt-4o"})
    document["mappings"][0]["chain"][2]["input_price"] = 1
    document["mappings"][0]["chain"][0]["output_price"] = -1
    with pytest.raises(Exception) as failed:
        import_document(document, {}, dry_run=True)
    problems = "\n".join(getattr(failed.value, "problems", [str(failed.value)]))
    assert "mappings[0].chain[2]: only provider targets take a model name and prices" in problems
    assert "mappings[0].chain[0].output_price: expected a number, at least 0" in problems
    assert "mappings[0].chain: cloud:gpt-4o is in the chain twice" in problems


@pytest.mark.django_db
def test_create_api_key_takes_budgets() -> None:
    import io

    from django.core.management import call_command

    from gateway.keys.models import ApiKey

    out = io.StringIO()
    call_command("create_api_key", "ci", "--budget-day", "2.50", "--budget-month", "40",
                 stdout=out)  # fmt: skip
    key = ApiKey.objects.get(name="ci")
    assert (key.budget_per_day, key.budget_per_month) == (Decimal("2.50"), Decimal("40"))
    assert "2.50 USD/day, 40 USD/month" in out.getvalue()


@pytest.mark.django_db
def test_a_price_past_the_columns_digits_is_a_named_problem() -> None:
    """MappingTarget prices are DecimalField(12, 4): more is refused by the import's
    check, with the place named, never by the database mid-write (PostgreSQL's
    DataError)."""
    from routing.config_io import import_document
    from routing.config_schema import ConfigError

    def chain(**prices: object) -> dict[str, object]:
        return {
            "version": 1,
            "providers": [{"name": "cloud", "kind": "openai", "api_key_env": None}],
            "mappings": [{"pattern": "gpt-*", "chain": [{"provider": "cloud", **prices}]}],
        }

    with pytest.raises(ConfigError) as failed:
        import_document(chain(input_price=0.00001, output_price=123456789.5), {}, dry_run=False)
    problems = "\n".join(failed.value.problems)
    assert "mappings[0].chain[0].input_price: Ensure that there are no more than 4 decimal" in (
        problems
    )
    assert "mappings[0].chain[0].output_price: Ensure that there are no more than 8 digits " in (
        problems
    )
    assert not MappingTarget.objects.exists()
    import_document(chain(input_price=12345678.1234, output_price=0.0001), {}, dry_run=False)
    assert MappingTarget.objects.get().input_price == Decimal("12345678.1234")
