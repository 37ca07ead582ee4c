"""Django admin for the routing configuration."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from . import route_tester
from .admin_chain import NamesChainsOnBlockedDelete, TargetInline
from .local_state import has_model_folder, local_state
from .models import BackendMapping, CloudCredential, LocalModel, Provider
from .probes import probe_providers

# The gateway has no public site: Django's "View site" link would lead to a 404.
admin.site.site_url = None


class LocalModelForm(forms.ModelForm):
    class Meta:
        model = LocalModel
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
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


class ApiKeyFormMixin(forms.ModelForm):
    """A write-only API key field: typed in, never rendered back."""

    api_key_input = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the current key.",
    )

    def clean_api_key_input(self) -> str:
        key: str = self.cleaned_data.get("api_key_input") or ""
        if any(c in key for c in "\r\n\0\t"):
            raise forms.ValidationError("An API key is one line, without tabs.")
        return key

    def key_to_set(self) -> str:
        return self.cleaned_data.get("api_key_input") or ""


class ProviderForm(ApiKeyFormMixin):
    class Meta:
        model = Provider
        fields = "__all__"


class SensitiveKeyInput:
    """With GATEWAY_DEBUG on, Django's error page lists POST data: not the key."""

    @method_decorator(sensitive_post_parameters("api_key_input"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(*args, **kwargs)  # type: ignore[misc]


@admin.register(Provider)
class ProviderAdmin(NamesChainsOnBlockedDelete, SensitiveKeyInput, admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "url", "enabled", "api_key_status", "max_retries")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url", "description")
    actions = ["test_connection"]
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "api_key_input", "enabled", "description")}),
        ("Requests", {"fields": ("extra_headers",)}),
        (
            "Timeouts (seconds)",
            {
                "fields": (
                    "connect_timeout",
                    "first_byte_timeout",
                    "stream_idle_timeout",
                    "total_timeout",
                )
            },
        ),
        (
            "Retries and circuit breaker",
            {
                "fields": (
                    "max_retries",
                    "retry_backoff",
                    "retry_after_cap",
                    "breaker_fail_max",
                    "breaker_reset_timeout",
                )
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).select_related("credential")

    @admin.display(description="URL")
    def url(self, obj: Provider) -> str:
        return obj.effective_base_url

    @admin.display(description="API key")
    def api_key_status(self, obj: Provider) -> str:
        credential = getattr(obj, "credential", None)
        if credential is None:
            return "not set"
        return f"set (…{credential.key_suffix})" if credential.key_suffix else "set"

    def save_model(
        self, request: HttpRequest, obj: Provider, form: ProviderForm, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        key = form.key_to_set()
        if key:
            credential = getattr(obj, "credential", None) or CloudCredential(provider=obj)
            credential.set_key(key)
            credential.save()

    @admin.action(description="Test connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider, result in zip(
            queryset, async_to_sync(probe_providers)(list(queryset)), strict=True
        ):
            status = f"HTTP {result.status}" if result.status else "no response"
            summary = f"{status}, {result.latency_ms:.0f} ms"
            if result.ok:
                self.message_user(request, f"{provider.name}: OK ({summary})", messages.SUCCESS)
            else:
                message = f"{provider.name}: FAILED ({summary}): {result.error}"
                self.message_user(request, message, messages.ERROR)


class CloudCredentialForm(ApiKeyFormMixin):
    class Meta:
        model = CloudCredential
        fields = ("provider",)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.instance.pk and not self.key_to_set():
            self.add_error("api_key_input", "An API key is required.")
        return data

    def save(self, commit: bool = True) -> CloudCredential:
        credential = super().save(commit=False)
        if self.key_to_set():
            credential.set_key(self.key_to_set())
        if commit:
            credential.save()
        return credential


@admin.register(CloudCredential)
class CloudCredentialAdmin(SensitiveKeyInput, admin.ModelAdmin):
    form = CloudCredentialForm
    list_display = ("provider", "key_set", "key_suffix_display", "source_env", "updated_at")
    list_filter = ("provider__kind",)
    search_fields = ("provider__name",)

    @admin.display(description="key set", boolean=True)
    def key_set(self, obj: CloudCredential) -> bool:
        return obj.pk is not None  # a credential row always holds a key (the form requires one)

    @admin.display(description="last 4")
    def key_suffix_display(self, obj: CloudCredential) -> str:
        return f"…{obj.key_suffix}" if obj.key_suffix else "—"


@admin.register(BackendMapping)
class BackendMappingAdmin(admin.ModelAdmin):
    list_display = ("pattern", "priority", "enabled", "chain", "description")
    list_filter = ("enabled", "targets__provider", "targets__local_model")
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
        return " → ".join(str(t) for t in obj.targets.all()) or "—"

    def get_urls(self) -> list[Any]:
        tester = self.admin_site.admin_view(self.route_tester_view)
        return [path("route-tester/", tester, name="routing_route_tester"), *super().get_urls()]

    def route_tester_view(self, request: HttpRequest) -> HttpResponse:
        name = request.GET.get("model", "").strip()
        context = {
            **self.admin_site.each_context(request),
            "title": "Route tester",
            "opts": self.model._meta,
            "model_name": name,
            "result": route_tester.explain(name) if name else None,
        }
        return TemplateResponse(request, "admin/routing/route_tester.html", context)


# Keys and the request log have their own admin modules; importing them registers them.
from . import admin_keys, admin_logs  # noqa: E402, F401
