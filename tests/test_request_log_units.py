"""The request log in process: rows, the batch writer, pruning, the read-only admin
and the usage page."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from gateway.context import RequestContext
from gateway.keys.models import ApiKey
from gateway.keys.selectors import KeyRecord
from gateway.keys.services import create_api_key
from gateway.usage import writer as request_log
from gateway.usage.models import RequestLog
from gateway.usage.services import write_request_logs
from routing.failover import Attempt, Served


def finished(model: str = "demo", *, status: int = 200, key: Any = None) -> RequestContext:
    ctx = RequestContext(protocol="anthropic", endpoint="messages")
    ctx.requested_model, ctx.stream, ctx.status, ctx.api_key = model, True, status, key
    ctx.served = Served(
        backend="local:demo",
        model="demo",
        attempts=[Attempt("cloud", "x", "503", 5.0), Attempt("local:demo", "demo", "ok", 9.0)],
    )
    ctx.input_tokens, ctx.output_tokens = 12, 7
    ctx.first_token_at = ctx.started + 0.01
    return ctx


def test_a_row_holds_what_the_request_did() -> None:
    row = request_log.row(finished("m" * 300))
    assert row["requested_model"] == "m" * 200  # client-chosen: cut to the column
    assert (row["backend"], row["served_model"], row["attempts"], row["fallbacks"]) == (
        "local:demo",
        "demo",
        2,
        1,
    )
    assert row["attempt_trail"] == "cloud/x=503, local:demo/demo=ok"
    assert (row["stream"], row["status"], row["input_tokens"], row["output_tokens"]) == (
        True,
        200,
        12,
        7,
    )
    assert row["ttft_ms"] == pytest.approx(10, abs=1)
    assert row["api_key_id"] is None and row["created_at"].tzinfo is not None


@pytest.mark.django_db(transaction=True)
def test_the_writer_flushes_full_batches_and_the_rest_on_stop(settings: Any) -> None:
    settings.GATEWAY_REQUEST_LOG_BATCH_SIZE = 2
    settings.GATEWAY_REQUEST_LOG_FLUSH_MS = 60_000  # only a full batch wakes the writer
    key, _ = create_api_key("batch")
    try:
        for _ in range(5):
            request_log.record(finished(key=KeyRecord.of(key)))
        deadline = time.monotonic() + 5
        while RequestLog.objects.count() < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert RequestLog.objects.count() >= 4  # written by the thread, in batches
    finally:
        request_log.stop()
    assert RequestLog.objects.count() == 5 and request_log.pending() == 0
    assert set(RequestLog.objects.values_list("api_key_id", flat=True)) == {key.pk}
    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.django_db(transaction=True)
def test_one_bad_row_never_holds_up_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """Client-chosen text and upstream-reported counts are made valid for their
    columns; a row the database still refuses is dropped alone, and logged."""
    odd = finished("model\x00with-nul")
    odd.input_tokens = 10**12  # a bogus usage from an upstream
    good = request_log.row(finished("fine"))
    refused = {**good, "status": -1}  # what no row() makes: the database refuses it
    try:
        request_log._buffer.extend([request_log.row(odd), refused, good])
        assert request_log.flush() == 2
    finally:
        request_log._buffer.clear()
    rows = {r.requested_model: r for r in RequestLog.objects.all()}
    assert set(rows) == {"modelwith-nul", "fine"}
    assert rows["modelwith-nul"].input_tokens == request_log.LARGE
    assert "dropped a row the database refused" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_writer_prunes_past_the_retention(settings: Any) -> None:
    settings.GATEWAY_REQUEST_LOG_RETENTION_DAYS = 30
    for age in (1, 45, 90):
        log_row(age)
    request_log.start()  # as the gateway does at start, before any request
    try:
        deadline = time.monotonic() + 5
        while RequestLog.objects.count() > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        request_log.stop()
    assert RequestLog.objects.count() == 1


@pytest.mark.django_db
def test_rows_of_a_deleted_key_are_kept_without_it() -> None:
    key, _ = create_api_key("gone")
    row = request_log.row(finished())
    row["api_key_id"] = key.pk
    key.delete()
    assert write_request_logs([row]) == 1
    assert RequestLog.objects.get().api_key_id is None


def log_row(age_days: float, key: ApiKey | None = None, **fields: Any) -> RequestLog:
    """A row written as the gateway writes it (the log writer, which keeps the usage rollup)."""
    values: dict[str, Any] = {
        "created_at": timezone.now() - timedelta(days=age_days),
        "api_key_id": key.pk if key else None,
        "protocol": "openai",
        "endpoint": "chat.completions",
        "requested_model": "demo",
        "backend": "local:demo",
        "status": 200,
        "latency_ms": 10.0,
        "input_tokens": 10,
        "output_tokens": 5,
    }
    write_request_logs([{**values, **fields}])
    return RequestLog.objects.latest("id")


@pytest.mark.django_db
def test_prune_command(settings: Any) -> None:
    for age in (0, 5, 10, 40, 100):
        log_row(age)
    out = io.StringIO()
    call_command("prune_request_log", "--older-than", "30", stdout=out)
    assert "deleted 2" in out.getvalue()
    settings.GATEWAY_REQUEST_LOG_RETENTION_DAYS = 7
    call_command("prune_request_log", stdout=out)
    assert sorted(RequestLog.objects.values_list("created_at", flat=True))[0] > (
        timezone.now() - timedelta(days=7)
    )
    assert RequestLog.objects.count() == 2
    settings.GATEWAY_REQUEST_LOG_RETENTION_DAYS = 0
    call_command("prune_request_log", stdout=out)
    assert "retention is off" in out.getvalue() and RequestLog.objects.count() == 2


@pytest.mark.django_db
def test_request_log_admin_is_read_only(admin_client: Client) -> None:
    key, _ = create_api_key("adm")
    row = log_row(0, key, stream=True, backend="cloud", status=503, error_type="upstream_error")
    log_row(1)
    base = "/admin/usage/requestlog/"
    listing = admin_client.get(base)
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "/admin/usage/requestlog/usage/" in page and f"{base}add/" not in page
    queries = [
        "protocol__exact=openai",
        "status=503",
        "backend=cloud",
        "stream__exact=1",
        f"api_key__id__exact={key.pk}",
        f"created_at__year={row.created_at.year}",
    ]
    for query in queries:
        filtered = admin_client.get(f"{base}?{query}")
        assert filtered.status_code == 200, query
    assert admin_client.get(f"{base}?status=503").context["cl"].result_count == 1
    assert admin_client.get(f"{base}add/").status_code == 403
    change = admin_client.get(f"{base}{row.pk}/change/")
    assert change.status_code == 200  # viewable, with nothing to save
    assert b'name="_save"' not in change.content and b"upstream_error" in change.content
    assert admin_client.post(f"{base}{row.pk}/change/", {"status": 200}).status_code == 403
    assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert RequestLog.objects.get(pk=row.pk).status == 503


@pytest.mark.django_db
def test_usage_page_per_key_model_and_day(admin_client: Client) -> None:
    key, _ = create_api_key("team-a")
    log_row(0, key, input_tokens=100, output_tokens=50)
    log_row(0, key, input_tokens=1, output_tokens=2, status=500)
    log_row(0, key, requested_model="gpt-4o", input_tokens=7, output_tokens=3)
    log_row(2, None, input_tokens=4, output_tokens=4)
    log_row(2, key, input_tokens=1000, output_tokens=1)
    log_row(60, key)  # outside every period shown
    page = admin_client.get("/admin/usage/requestlog/usage/?days=7")
    assert page.status_code == 200
    rows = [row for row, _ in page.context["rows"]]
    assert [(r.key_id, r.model, r.requests, r.errors, r.input_tokens, r.output_tokens)
            for r in rows] == [
        (key.pk, "demo", 3, 1, 1101, 53),
        (key.pk, "gpt-4o", 1, 0, 7, 3),
        (None, "demo", 1, 0, 4, 4),
    ]  # fmt: skip, most tokens first
    today = datetime.now(UTC).date()
    days = [(t.day, t.requests) for t, _ in page.context["days_rows"]]
    assert days == [(today, 3), (today - timedelta(days=2), 2)]
    html = page.content.decode()
    assert '<svg id="usage-chart"' in html and html.count("<rect") == 14  # 7 days x 2
    assert "5 requests, 1112 input and 60 output tokens" in " ".join(html.split())
    # Each row opens the log filtered to it: the same rows.
    _, url = page.context["rows"][0]
    assert admin_client.get(url).context["cl"].result_count == 3
    _, url = page.context["days_rows"][1]
    assert admin_client.get(url).context["cl"].result_count == 2
    only_key = admin_client.get(f"/admin/usage/requestlog/usage/?key={key.pk}&days=90")
    assert {r.key_id for r, _ in only_key.context["rows"]} == {key.pk}
    assert sum(r.requests for r, _ in only_key.context["rows"]) == 5
    anonymous = admin_client.get("/admin/usage/requestlog/usage/?key=none")
    assert [r.key_id for r, _ in anonymous.context["rows"]] == [None]
    _, url = anonymous.context["rows"][0]
    assert admin_client.get(url).context["cl"].result_count == 1
    # Reachable from the key list too.
    assert b"/admin/usage/requestlog/usage/" in admin_client.get("/admin/keys/apikey/").content


@pytest.mark.django_db
def test_usage_takes_the_request_logs_view_permission(client: Client) -> None:
    from django.contrib.auth.models import Permission, User

    staff = User.objects.create_user("ops", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/usage/requestlog/usage/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_requestlog"))
    assert client.get("/admin/usage/requestlog/usage/").status_code == 200
