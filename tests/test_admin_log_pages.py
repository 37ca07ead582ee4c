"""The request log's list and row pages and the links between the admin's pages,
through Django's test client."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from routing.models import BackendMapping, LocalModel, MappingTarget, Provider, RequestLog
from routing.services_keys import create_api_key
from routing.services_logs import write_request_logs

from .test_admin import demo, provider  # noqa: F401  (fixtures)
from .test_request_log_units import log_row

pytestmark = pytest.mark.django_db

LOG = "/admin/routing/requestlog/"


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
    assert f'href="/admin/routing/apikey/{key.pk}/change/">' in page
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


def test_the_writer_names_the_mapping_that_routed_a_row(
    settings: Any, provider: Provider, demo: LocalModel  # noqa: F811
) -> None:
    settings.ENABLE_CLOUD_ROUTING = True
    mapping = BackendMapping.objects.create(pattern="gpt-*")
    MappingTarget.objects.create(mapping=mapping, provider=provider, position=0)
    base = {"created_at": timezone.now(), "protocol": "openai", "endpoint": "chat.completions",
            "status": 200, "latency_ms": 1.0}  # fmt: skip
    write_request_logs([
        base | {"requested_model": "gpt-4o", "backend": "openai"},
        base | {"requested_model": "demo", "backend": "local:demo"},  # no mapping: by name
        base | {"requested_model": "nothing", "backend": "", "status": 404},
    ])  # fmt: skip
    rows = RequestLog.objects.order_by("id").values_list("requested_model", "mapping")
    assert list(rows) == [("gpt-4o", "gpt-*"), ("demo", ""), ("nothing", "")]


def test_the_usage_rollup_adds_up_to_the_log_across_batches() -> None:
    import random

    from routing.models import UsageDay

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
    from routing.models import UsageDay
    from routing.services_logs import USAGE_KEEP_DAYS, prune_request_log

    log_row(40)
    log_row(USAGE_KEEP_DAYS + 5)
    assert prune_request_log(30) == 2
    assert not RequestLog.objects.exists()
    [kept] = UsageDay.objects.all()
    assert kept.day == (timezone.now() - timedelta(days=40)).astimezone(UTC).date()
    page = admin_client.get("/admin/routing/requestlog/usage/?days=90")
    assert [r.requests for r, _ in page.context["rows"]] == [1]
