"""Django admin for the request log (read-only) and the usage page with its chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from .models import ApiKey, RequestLog
from .selectors_usage import ANONYMOUS, DayTotal, daily_totals, usage

PERIODS = (7, 14, 30, 90)


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "api_key",
        "protocol",
        "endpoint",
        "requested_model",
        "backend",
        "served_model",
        "status",
        "error_type",
        "stream",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "latency_ms",
        "ttft_ms",
        "attempts",
        "fallbacks",
    )
    list_filter = ("protocol", "status", "backend", "stream", "api_key", "endpoint")
    date_hierarchy = "created_at"
    search_fields = ("requested_model", "served_model", "error_type")
    list_select_related = ("api_key",)
    show_full_result_count = False  # a COUNT(*) over a large log on every page is slow
    change_list_template = "admin/routing/requestlog/change_list.html"

    # The log is a record: it is written by the gateway and pruned by retention only.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.usage_view)
        return [path("usage/", view, name="routing_requestlog_usage"), *super().get_urls()]

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        # admin_view lets in any staff user: usage is read from the log, so it
        # takes the log's own view permission.
        if not self.has_view_permission(request):
            raise PermissionDenied
        raw = request.GET.get("days", "")
        days = int(raw) if raw.isdigit() and int(raw) in PERIODS else 14
        key = request.GET.get("key", "")
        key = key if key == ANONYMOUS or key.isdigit() else ""
        until = datetime.now(UTC).date()
        since = until - timedelta(days=days - 1)
        rows = usage(since, key)
        totals = daily_totals(rows, since, until)
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage",
            "opts": self.model._meta,
            "rows": rows,
            "chart": chart(totals),
            "days": days,
            "periods": PERIODS,
            "key": key,
            "anonymous": ANONYMOUS,
            "keys": ApiKey.objects.only("id", "name", "prefix").order_by("name"),
            "total_requests": sum(t.requests for t in totals),
            "total_input": sum(t.input_tokens for t in totals),
            "total_output": sum(t.output_tokens for t in totals),
        }
        return TemplateResponse(request, "admin/routing/usage.html", context)


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
