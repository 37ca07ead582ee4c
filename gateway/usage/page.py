"""The usage page (requests and tokens per key, model and day) and its chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from gateway.keys.models import ApiKey

from .links import log_url, period_filters
from .selectors import ANONYMOUS, DayTotal, UsageRow, daily_totals, usage_by_key_and_model

PERIODS = (7, 14, 30, 90)


def usage_page(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    raw = request.GET.get("days", "")
    days = int(raw) if raw.isdigit() and int(raw) in PERIODS else 14
    key = request.GET.get("key", "")
    key = key if key == ANONYMOUS or key.isdigit() else ""
    until = datetime.now(UTC).date()
    since = until - timedelta(days=days - 1)
    totals = daily_totals(since, until, key)
    key_filter = _key_filter(key)
    period = period_filters(since, until)
    context = {
        **context,
        "title": "Usage",
        # Each row with the log filtered to it: the period (or day), the key, the model.
        "rows": [
            (row, log_url(**period, **_row_key_filter(row), requested_model=row.model))
            for row in usage_by_key_and_model(since, until, key)
        ],
        "days_rows": [
            (t, log_url(**period_filters(t.day, t.day), **key_filter))
            for t in reversed(totals)
            if t.requests
        ],
        "period_log": log_url(**period, **key_filter),
        "chart": chart(totals),
        "days": days,
        "periods": PERIODS,
        "key": key,
        "anonymous": ANONYMOUS,
        "keys": ApiKey.objects.only("id", "name", "prefix").order_by("name"),
        "total_requests": sum(t.requests for t in totals),
        "total_input": sum(t.input_tokens for t in totals),
        "total_output": sum(t.output_tokens for t in totals),
        "total_cost": sum(t.cost for t in totals),
    }
    return TemplateResponse(request, "admin/usage/usage.html", context)


def _key_filter(key: str) -> dict[str, str]:
    if key == ANONYMOUS:
        return {"api_key__isnull": "True"}
    return {"api_key__id__exact": key} if key else {}


def _row_key_filter(row: UsageRow) -> dict[str, str]:
    return {"api_key__id__exact": str(row.key_id)} if row.key_id else {"api_key__isnull": "True"}


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    input_y: float
    input_height: float
    output_y: float
    output_height: float
    label: str  # shown under the bar ("" for most, to stay readable)
    title: str  # the tooltip


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    top: int
    bottom: int
    peak: int
    bars: list[Bar]


def chart(totals: list[DayTotal], width: int = 760, height: int = 220) -> Chart:
    """Stacked bars of input and output tokens per day, laid out for inline SVG."""
    top, bottom, left = 16, height - 24, 48
    peak = max((t.tokens for t in totals), default=0)
    scale = (bottom - top) / peak if peak else 0.0
    slot = (width - left) / max(len(totals), 1)
    every = max(1, len(totals) // 10)  # at most about ten date labels
    bars = []
    for i, total in enumerate(totals):
        x = left + i * slot + slot * 0.15
        output_h = total.output_tokens * scale
        input_h = total.input_tokens * scale
        bars.append(
            Bar(
                x=round(x, 1),
                width=round(slot * 0.7, 1),
                output_y=round(bottom - output_h, 1),
                output_height=round(output_h, 1),
                input_y=round(bottom - output_h - input_h, 1),
                input_height=round(input_h, 1),
                label=total.day.strftime("%m-%d") if i % every == 0 else "",
                title=f"{total.day}: {total.requests} requests, {total.input_tokens} input "
                f"+ {total.output_tokens} output tokens",
            )
        )
    return Chart(width, height, top, bottom, peak, bars)
