"""Django admin for the routing configuration."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from gateway.usage.links import log_url

from . import route_tester, selectors
from .admin_chain import NamesChainsOnBlockedDelete, TargetInline, describe_chain
from .health import RECENT_MINUTES
from .local_state import has_model_folder, local_state
from .models import BackendMapping, LocalModel, Provider, RoutingSwitch
from .services_health import reset_breaker

# The gateway has no public site: Django's "View site" link would lead to a 404.
admin.site.site_url = None


class LocalModelForm(forms.ModelForm):
    class Meta:
        model = LocalModel
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean returns, typed as never None
        # An enabled model without its folder would be offered in /v1/models
        # and answer 500: refused here; a disabled one may wait for its files.
        path = data.get("path", self.instance.path)
        if data.get("enabled") and path and "path" not in self.errors:
            probe = LocalModel(path=path)
            if not has_model_folder(probe):
                self.add_error(
                    "path" if "path" in self.fields else "enabled",
                    f"No model at {probe.resolved_path} (no config.json there). "
                    "Put the model's files there, or save it disabled.",
                )
        return data


@admin.register(LocalModel)
class LocalModelAdmin(NamesChainsOnBlockedDelete, admin.ModelAdmin):
    form = LocalModelForm
    list_display = ("name", "path", "enabled", "state", "preload", "context_length", "updated_at")
    list_filter = ("enabled", "preload")
    search_fields = ("name", "path", "description")
    list_editable = ("enabled",)
    readonly_fields = ("state",)

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> Any:
        # "enabled" is editable in the list too: the same folder check there.
        return super().get_changelist_form(request, form=LocalModelForm, **kwargs)

    @admin.display(description="state (this process)")
    def state(self, obj: LocalModel) -> str:
        return local_state(obj).label if obj.pk else "—"


@admin.register(BackendMapping)
class BackendMappingAdmin(admin.ModelAdmin):
    list_display = ("pattern", "priority", "enabled", "chain", "balance", "description", "requests")
    list_filter = ("enabled", "targets__provider", "targets__local_model")
    readonly_fields = ("requests",)
    search_fields = ("pattern", "description", "targets__upstream_model")
    list_editable = ("priority", "enabled")
    inlines = [TargetInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BackendMapping]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related("targets__provider", "targets__local_model")
            .distinct()
        )

    @admin.display(description="chain (primary first)")
    def chain(self, obj: BackendMapping) -> str:
        return describe_chain(list(obj.targets.all())) or "—"

    @admin.display(description="requests")
    def requests(self, obj: BackendMapping) -> SafeString | str:
        if obj.pk is None:
            return "—"
        return format_html('<a href="{}">requests it routed</a>', log_url(mapping=obj.pattern))

    def get_urls(self) -> list[Any]:
        tester = self.admin_site.admin_view(self.route_tester_view)
        reset = self.admin_site.admin_view(self.reset_breaker_view)
        return [
            path("route-tester/", tester, name="routing_route_tester"),
            path("route-tester/reset-breaker/", reset, name="routing_reset_breaker"),
            *super().get_urls(),
        ]

    @method_decorator(require_POST)
    def reset_breaker_view(self, request: HttpRequest) -> HttpResponse:
        """Close a breaker of a hop the route tester showed; kept in the history of
        the provider or local model it belongs to (the audit log)."""
        model, name = request.POST.get("model", ""), request.POST.get("breaker", "")
        snapshot = selectors.load_snapshot()
        route = snapshot.table.resolve(model)
        position = request.POST.get("position", "")
        chain = route.chain if route else ()
        if not position.isdigit() or int(position) >= len(chain):
            raise Http404("no such target in this route")
        hop = chain[int(position)]
        if name not in dict(route_tester.hop_breakers(hop, snapshot)):
            raise Http404("no such breaker for this target")
        owner_model = LocalModel if hop.target.kind == "local" else Provider
        owner = owner_model.objects.get(name=hop.target.name)
        if not self.admin_site.get_model_admin(owner_model).has_change_permission(request, owner):
            raise PermissionDenied
        try:
            before = reset_breaker(name, hop, snapshot)
        except (RedisError, OSError) as exc:
            message = f"Breaker {name} was not reset: the shared state (Redis) failed: {exc}"
            self.message_user(request, message, messages.ERROR)
        else:
            self.log_change(request, owner, f"Reset the circuit breaker {name} (was {before}).")
            self.message_user(request, f"Breaker {name} reset (it was {before}).")
        return redirect(f"{reverse('admin:routing_route_tester')}?{urlencode({'model': model})}")

    def route_tester_view(self, request: HttpRequest) -> HttpResponse:
        name = request.GET.get("model", "").strip()
        context = {
            **self.admin_site.each_context(request),
            "title": "Route tester",
            "opts": self.model._meta,
            "model_name": name,
            "result": route_tester.explain(name) if name else None,
            "recent_minutes": RECENT_MINUTES,
        }
        return TemplateResponse(request, "admin/routing/route_tester.html", context)


@admin.register(RoutingSwitch)
class RoutingSwitchAdmin(admin.ModelAdmin):
    """One row, edited in place: each change lands in its history (the audit log)."""

    fields = ("cloud_routing", "effective", "updated_at")
    readonly_fields = ("effective", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        switch, _ = RoutingSwitch.objects.get_or_create(pk=1)
        return redirect("admin:routing_routingswitch_change", switch.pk)

    @admin.display(description="in force")
    def effective(self, obj: RoutingSwitch) -> str:
        on = selectors.cloud_routing()
        source = "ENABLE_CLOUD_ROUTING" if obj.cloud_routing is None else "this switch"
        return f"{'on' if on else 'off'} (from {source}); every process follows within " \
            f"{settings.GATEWAY_ROUTING_REFRESH_SECONDS:g} s of a change"

    def response_change(self, request: HttpRequest, obj: RoutingSwitch) -> HttpResponse:
        self.message_user(
            request, f"Cloud routing is now {'ON' if selectors.cloud_routing() else 'OFF'}."
        )
        return redirect("admin:routing_routingswitch_change", obj.pk)


# Providers have their own admin module; importing it registers them. Provider
# keys are edited on the provider form only (the CloudCredential rows stay,
# without an admin page of their own). Client keys and the request log are
# the admin of their own apps (gateway.keys, gateway.usage).
from . import admin_providers  # noqa: E402, F401
