"""Django admin for the request log (read-only): a list that fits a 1400 px
screen, a row page with everything else and links to what the row names, and
the usage page (in `page`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from routing.models import BackendMapping, LocalModel, Provider

from .links import log_url
from .models import RequestLog
from .page import usage_page

LOCAL_PREFIX = "local:"


def status_class(status: int) -> str:
    if status == 499:
        return "gone"  # the client left: not the gateway's failure
    return {2: "ok", 4: "client", 5: "server"}.get(status // 100, "other")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _link(url: str, text: str) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, text)


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    # What an operator scans; the rest is on the row page.
    list_display = ("time", "key", "route", "status_badge", "tokens", "latency", "ttft",
                    "cost_usd")  # fmt: skip
    list_display_links = ("time",)
    list_filter = (
        ("created_at", admin.DateFieldListFilter),
        "status",
        "protocol",
        "backend",
        "stream",
        "api_key",
        "endpoint",
    )
    search_fields = ("requested_model", "served_model", "error_type")
    list_select_related = ("api_key",)
    show_full_result_count = False  # a COUNT(*) over a large log on every page is slow
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice: a scan each
    change_list_template = "admin/usage/requestlog/change_list.html"
    fieldsets = (
        (None, {"fields": ("created_at", "key_link", "protocol", "endpoint", "streamed")}),
        ("Route", {"fields": ("requested_model", "mapping_link", "backend_link",
                              "served_model", "attempts", "fallbacks", "attempt_trail")}),
        ("Outcome", {"fields": ("status", "error_type", "error_message", "input_tokens",
                                "output_tokens", "cached_tokens", "cost", "latency_ms",
                                "ttft_ms")}),
    )  # fmt: skip
    readonly_fields = ("key_link", "mapping_link", "backend_link", "streamed")

    # The log is a record: it is written by the gateway and pruned by retention only.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="time", ordering="created_at")
    def time(self, obj: RequestLog) -> str:
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")

    @admin.display(description="key", ordering="api_key__name")
    def key(self, obj: RequestLog) -> str:
        return obj.api_key.name if obj.api_key else "—"

    @admin.display(description="model → served by")
    def route(self, obj: RequestLog) -> SafeString:
        if not obj.backend:
            return format_html("{} → —", obj.requested_model or "—")
        served = obj.backend
        if obj.served_model and obj.served_model != obj.requested_model:
            served += f" ({obj.served_model})"
        if obj.fallbacks:
            return format_html(
                '{} → {} <span class="fallbacks" title="{}">↪ {}</span>',
                obj.requested_model, served, obj.attempt_trail, obj.fallbacks,
            )  # fmt: skip
        return format_html("{} → {}", obj.requested_model, served)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: RequestLog) -> SafeString:
        return format_html(
            '<span class="status status-{}" title="{}">{}</span>{}',
            status_class(obj.status),
            obj.error_message or obj.error_type,
            obj.status,
            f" {obj.error_type}" if obj.error_type else "",
        )

    @admin.display(description="tokens in / out")
    def tokens(self, obj: RequestLog) -> str:
        cached = f" ({obj.cached_tokens:,} cached)" if obj.cached_tokens else ""
        return f"{obj.input_tokens:,} / {obj.output_tokens:,}{cached}"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: RequestLog) -> str:
        return _ms(obj.latency_ms)

    @admin.display(description="TTFT", ordering="ttft_ms")
    def ttft(self, obj: RequestLog) -> str:
        return _ms(obj.ttft_ms)

    @admin.display(description="streamed")
    def streamed(self, obj: RequestLog) -> str:
        return "yes" if obj.stream else "no"  # words: a red cross would read as an error

    @admin.display(description="cost (USD)", ordering="cost")
    def cost_usd(self, obj: RequestLog) -> str:
        return f"{obj.cost:.4f}" if obj.cost else "—"

    @admin.display(description="API key")
    def key_link(self, obj: RequestLog) -> SafeString | str:
        if obj.api_key is None:
            return "—"
        change = reverse("admin:keys_apikey_change", args=[obj.api_key_id])
        return format_html(
            '{} · <a href="{}">all its requests</a>',
            _link(change, str(obj.api_key)),
            log_url(api_key__id__exact=obj.api_key_id),
        )

    @admin.display(description="mapping")
    def mapping_link(self, obj: RequestLog) -> SafeString | str:
        if not obj.mapping:
            return "— (no mapping: the local model of that name)" if obj.backend else "—"
        found = BackendMapping.objects.filter(pattern=obj.mapping).first()
        others = _link(log_url(mapping=obj.mapping), "its requests")
        if found is None:
            return format_html("{} (deleted since) · {}", obj.mapping, others)
        change = reverse("admin:routing_backendmapping_change", args=[found.pk])
        return format_html("{} · {}", _link(change, obj.mapping), others)

    @admin.display(description="served by")
    def backend_link(self, obj: RequestLog) -> SafeString | str:
        if not obj.backend:
            return "—"
        name = obj.backend.removeprefix(LOCAL_PREFIX)
        model = LocalModel if obj.backend.startswith(LOCAL_PREFIX) else Provider
        found = model.objects.filter(name=name).only("pk").first()
        others = _link(log_url(backend=obj.backend), "its requests")
        if found is None:
            return format_html("{} · {}", obj.backend, others)
        change = reverse(f"admin:routing_{model._meta.model_name}_change", args=[found.pk])
        return format_html("{} · {}", _link(change, obj.backend), others)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.usage_view)
        return [path("usage/", view, name="usage_requestlog_usage"), *super().get_urls()]

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        # admin_view lets in any staff user: usage is read from the log, so it
        # takes the log's own view permission.
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.model._meta}
        return usage_page(request, context)
