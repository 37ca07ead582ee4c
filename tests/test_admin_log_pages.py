"""The request log's list and row pages and the links between the admin's pages,
through Django's test client."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone

from gateway.context import RequestContext
from gateway.keys.services import create_api_key
from gateway.usage import writer as request_log
from gateway.usage.models import RequestLog
from gateway.usage.services import write_request_logs
from routing.failover import Walk
from routing.models import BackendMapping, LocalModel, MappingTarget, Provider

from .test_admin import demo, provider  # noqa: F401  (fixtures)
from .test_request_log_units import log_row

pytestmark = pytest.mark.django_db

LOG = "/admin/usage/requestlog/"


def test_the_list_shows_what_an_operator_scans(admin_client: Client) -> None:
    key, _ = create_api_key("team-a")
    log_row(0, key, requested_model="gpt-4o", backend="local:demo", served_model="demo",
            fallbacks=1, attempts=2, attempt_trail="cloud/gpt-4o=503, local:demo/demo=ok",
            input_tokens=1234, output_tokens=56, latency_ms=812.4, ttft_ms=95.0)  # fmt: skip
    log_row(0, None, status=503, error_type="upstream_error", backend="",
            error_message="every backend failed")  # fmt: skip
    page = admin_client.get(LOG).content.decode()
    start = page.index('id="result_list"')
    head = page[start : page.index("</thead>", start)]
    for column in ("Time", "Key", "Model → served by", "Status", "Tokens in / out", "Latency",
                   "TTFT"):  # fmt: skip
        assert column in head, column
    for hidden in ("Protocol", "Endpoint", "Attempts", "Stream"):
        assert hidden not in head, hidden
    now = timezone.localtime()
    assert f"{now:%Y-%m-%d %H:}" in page and " UTC</a>" in page  # seconds and the zone
    assert "gpt-4o → local:demo (demo)" in page and "↪ 1" in page
    assert '<span class="status status-server" title="every backend failed">503</span>' in page
    assert '<span class="status status-ok"' in page
    assert "1,234 / 56" in page and "812 ms" in page and "95 ms" in page


def test_the_row_page_adds_the_error_and_links_what_the_row_names(
    admin_client: Client, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    key, _ = create_api_key("team-b")
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    row = log_row(0, key, requested_model="gpt-4o", backend="openai", mapping="gpt-*",
                  status=502, error_type="upstream_error",
                  error_message="the upstream answered 502")  # fmt: skip
    page = admin_client.get(f"{LOG}{row.pk}/change/").content.decode()
    assert "the upstream answered 502" in page
    assert f'href="/admin/routing/backendmapping/{mapping.pk}/change/">gpt-*</a>' in page
    assert f'href="/admin/routing/provider/{provider.pk}/change/">openai</a>' in page
    assert f'href="/admin/keys/apikey/{key.pk}/change/">' in page
    assert f'href="{LOG}?mapping=gpt-%2A"' in page and f'href="{LOG}?backend=openai"' in page
    assert f'href="{LOG}?api_key__id__exact={key.pk}"' in page
    local = log_row(0, None, backend="local:demo")
    page = admin_client.get(f"{LOG}{local.pk}/change/").content.decode()
    assert f'href="/admin/routing/localmodel/{demo.pk}/change/">local:demo</a>' in page
    assert "no mapping: the local model of that name" in page
    streamed = page[page.index('class="form-row field-streamed"'):][:400]
    assert ">no<" in streamed and "icon-no" not in streamed  # a word, not a red cross


def test_a_mapping_links_to_the_requests_it_routed(admin_client: Client) -> None:
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    log_row(0, None, mapping="gpt-*")
    log_row(0, None, mapping="claude-*")
    listing = admin_client.get("/admin/routing/backendmapping/").content.decode()
    assert f'href="{LOG}?mapping=gpt-%2A"' in listing
    change = admin_client.get(f"/admin/routing/backendmapping/{mapping.pk}/change/")
    assert f'href="{LOG}?mapping=gpt-%2A"' in change.content.decode()
    assert admin_client.get(f"{LOG}?mapping=gpt-*").context["cl"].result_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_row_names_the_mapping_its_request_resolved(
    settings: Any, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    """The walk carries the mapping it resolved to the log row; the writer never
    resolves again, so a change saved before the row is written does not rename it."""
    settings.ENABLE_CLOUD_ROUTING = True
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
    walks = {name: async_to_sync(Walk.start)(name) for name in ("gpt-4o", "demo")}
    assert walks["gpt-4o"].served.mapping == "gpt-*"
    assert walks["demo"].served.mapping == ""  # no mapping: the local model by name
    mapping.pattern = "gpt-4*"  # saved after the request resolved, before its row is written
    mapping.save()
    rows = []
    for name, walk in walks.items():
        ctx = RequestContext(protocol="openai", endpoint="chat.completions")
        ctx.requested_model, ctx.status, ctx.served = name, 200, walk.served
        walk.served.backend = "openai" if name == "gpt-4o" else "local:demo"
        rows.append(request_log.row(ctx))
    unanswered = RequestContext(protocol="openai", endpoint="chat.completions")
    unanswered.requested_model, unanswered.status = "nothing", 404
    rows.append(request_log.row(unanswered))
    write_request_logs(rows)
    rows = RequestLog.objects.order_by("id").values_list("requested_model", "mapping")
    assert list(rows) == [("gpt-4o", "gpt-*"), ("demo", ""), ("nothing", "")]


def test_the_usage_rollup_adds_up_to_the_log_across_batches() -> None:
    import random

    from gateway.usage.models import UsageDay

    key, _ = create_api_key("rollup")
    rng = random.Random(3)
    now = timezone.now()
    for _ in range(5):  # batches that add to the same days, keys and models
        write_request_logs([
            {"created_at": now - timedelta(hours=rng.randint(0, 72)), "protocol": "openai",
             "endpoint": "chat.completions", "requested_model": rng.choice(["a", "b"]),
             "api_key_id": rng.choice([key.pk, None, 999_999]),  # 999999: no such key
             "status": rng.choice([200, 200, 503]), "latency_ms": 1.0,
             "input_tokens": rng.randint(0, 100), "output_tokens": rng.randint(0, 100)}
            for _ in range(40)
        ])  # fmt: skip
    from django.db.models import Count, Q, Sum
    from django.db.models.functions import TruncDate

    expected = {
        (r["day"], r["api_key_id"] or 0, r["requested_model"]): (
            r["n"], r["e"], r["i"], r["o"])
        for r in RequestLog.objects.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "api_key_id", "requested_model")
        .annotate(n=Count("id"), e=Count("id", filter=Q(status__gte=400)),
                  i=Sum("input_tokens"), o=Sum("output_tokens"))
    }  # fmt: skip
    actual = {
        (u.day, u.key_id, u.model): (u.requests, u.errors, u.input_tokens, u.output_tokens)
        for u in UsageDay.objects.all()
    }
    assert actual == expected and sum(v[0] for v in actual.values()) == 200


def test_pruning_keeps_the_usage_rollup_longer(admin_client: Client) -> None:
    from gateway.usage.models import UsageDay
    from gateway.usage.services import USAGE_KEEP_DAYS, prune_request_log

    log_row(40)
    log_row(USAGE_KEEP_DAYS + 5)
    assert prune_request_log(30) == 2
    assert not RequestLog.objects.exists()
    [kept] = UsageDay.objects.all()
    assert kept.day == (timezone.now() - timedelta(days=40)).astimezone(UTC).date()
    page = admin_client.get("/admin/usage/requestlog/usage/?days=90")
    assert [r.requests for r, _ in page.context["rows"]] == [1]
