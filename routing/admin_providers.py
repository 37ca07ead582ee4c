"""The admin's provider pages: the one place a provider's API key is set,
replaced or cleared, and a connection test of the form's values before saving.

The key field is write-only: never rendered back. A key typed into a form that
fails validation is kept for the next submit as a Fernet token in a hidden
field (readable for PENDING_KEY_SECONDS), so it is neither lost nor shown.
"""

from __future__ import annotations

import enum
from typing import Any

from asgiref.sync import async_to_sync
from cryptography.fernet import InvalidToken
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.urls import path
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from .admin_chain import NamesChainsOnBlockedDelete
from .backends import deployment_breakers
from .crypto import fernet
from .models import MIN_KEY_FOR_SUFFIX, Provider
from .probes import describe, probe_provider, probe_providers
from .services import set_provider_key

PENDING_KEY_SECONDS = 3600
class _Keep(enum.Enum):
    KEEP = "keep"  # the key is left as it is


KEEP = _Keep.KEEP
SENSITIVE = ("api_key_input", "pending_api_key")


def key_state(provider: Provider | None) -> str:
    credential = getattr(provider, "credential", None) if provider and provider.pk else None
    if credential is None:
        return "no key"
    state = f"key set, ends in …{credential.key_suffix}" if credential.key_suffix else "key set"
    return state + (f" (imported from {credential.source_env})" if credential.source_env else "")


class ProviderForm(forms.ModelForm):
    api_key_input = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: type a key to set or replace it; leave empty to keep the "
        "current one.",
    )
    clear_api_key = forms.BooleanField(
        label="Clear the key", required=False, help_text="Remove the stored key."
    )
    pending_api_key = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Provider
        fields = "__all__"

    def clean_api_key_input(self) -> str:
        key: str = self.cleaned_data.get("api_key_input") or ""
        if any(c in key for c in "\r\n\0\t"):
            raise forms.ValidationError("An API key is one line, without tabs.")
        return key

    def clean_pending_api_key(self) -> str:
        token: str = self.cleaned_data.get("pending_api_key") or ""
        if not token:
            return ""
        try:
            return fernet().decrypt(token.encode(), ttl=PENDING_KEY_SECONDS).decode()
        except InvalidToken:
            raise forms.ValidationError(
                "The key typed earlier is no longer kept: type it again."
            ) from None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean returns, typed as never None
        if data.get("clear_api_key") and self.typed_key():
            self.add_error("clear_api_key", "Type a new key or clear it, not both.")
        return data

    def typed_key(self) -> str:
        data = getattr(self, "cleaned_data", {})
        return data.get("api_key_input") or data.get("pending_api_key") or ""

    def key_change(self) -> str | _Keep | None:
        """KEEP, None (clear) or the new key."""
        if self.cleaned_data.get("clear_api_key"):
            return None
        return self.typed_key() or KEEP

    def full_clean(self) -> None:
        super().full_clean()
        key = self.typed_key() if self.is_bound else ""
        if self.errors and key:
            # Shown again for correction: the key goes back in encrypted.
            pending = fernet().encrypt(key.encode()).decode()
            if isinstance(self.data, QueryDict):  # a POST: keep its repeated fields
                data = self.data.copy()
                data["pending_api_key"] = pending
                self.data = data
            else:
                self.data = {**self.data, "pending_api_key": pending}
            ending = f" (ends in …{key[-4:]})" if len(key) >= MIN_KEY_FOR_SUFFIX else ""
            # The bound field copied the help text when cleaning made it.
            self["api_key_input"].help_text = (
                f"The key you typed{ending} is kept: it is set when the form is saved. "
                "Type another to replace it."
            )


@admin.register(Provider)
class ProviderAdmin(NamesChainsOnBlockedDelete, admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "url", "enabled", "api_key_status", "max_retries")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url", "description")
    actions = ["test_connection"]
    readonly_fields = ("api_key_status", "breaker_states")
    change_form_template = "admin/routing/provider/change_form.html"
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "enabled", "description")}),
        ("API key", {"fields": ("api_key_status", "api_key_input", "clear_api_key",
                                "pending_api_key")}),
        ("Requests", {"fields": ("extra_headers", "accepts_prefill")}),
        ("Timeouts (seconds)", {"fields": ("connect_timeout", "first_byte_timeout",
                                           "first_token_timeout", "stream_idle_timeout",
                                           "total_timeout")}),
        ("Retries and circuit breaker", {"fields": ("max_retries", "retry_backoff",
                                                    "retry_after_cap", "breaker_fail_max",
                                                    "breaker_reset_timeout",
                                                    "breaker_states")}),
    )  # fmt: skip

    @admin.display(description="Breakers now")
    def breaker_states(self, obj: Provider | None) -> str:
        """One breaker per deployment (this provider + an upstream model), and the
        provider's own, which only connection failures open."""
        if obj is None or not obj.pk:
            return "-"
        states = deployment_breakers(obj.name)
        return ", ".join(f"{name}: {state}" for name, state in states) or "none used yet"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).select_related("credential")

    @admin.display(description="URL")
    def url(self, obj: Provider) -> str:
        return obj.effective_base_url

    @admin.display(description="API key")
    def api_key_status(self, obj: Provider | None) -> str:
        return key_state(obj)

    @method_decorator(sensitive_post_parameters(*SENSITIVE))
    def changeform_view(self, *args: Any, **kwargs: Any) -> HttpResponse:
        # With GATEWAY_DEBUG on, Django's error page lists POST data: not the key.
        return super().changeform_view(*args, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Provider, form: ProviderForm, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        key = form.key_change()
        if key is not KEEP:
            set_provider_key(obj, key)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.test_connection_view)
        return [
            path("test-connection/", view, name="routing_provider_test_connection"),
            *super().get_urls(),
        ]

    @method_decorator(sensitive_post_parameters(*SENSITIVE))
    @method_decorator(require_POST)
    def test_connection_view(self, request: HttpRequest) -> JsonResponse:
        """The form's values, as typed and not saved, tried against the provider."""
        obj = None
        if request.GET.get("id"):
            obj = self.get_object(request, request.GET["id"])
            if obj is None:
                raise Http404("no such provider")
        allowed = self.has_change_permission(request, obj) if obj else self.has_add_permission(
            request
        )
        if not allowed:
            raise PermissionDenied
        form = self.get_form(request, obj)(request.POST, instance=obj)
        assert isinstance(form, ProviderForm)  # get_form builds on this admin's form
        if not form.is_valid():
            problems = "; ".join(
                f"{form.fields[name].label if name in form.fields else 'form'}: "
                f"{' '.join(map(str, errs))}"
                for name, errs in form.errors.items()
            )
            return JsonResponse({"ok": False, "message": f"Correct the form first. {problems}"})
        key = form.key_change()
        if key is None:
            return JsonResponse({"ok": False, "message": "No API key: the key would be cleared."})
        typed = None if key is KEEP else str(key)
        result = async_to_sync(probe_provider)(form.instance, 5.0, typed)
        return JsonResponse({"ok": result.ok, "message": describe(result)})

    @admin.action(description="Test connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider, result in zip(
            queryset, async_to_sync(probe_providers)(list(queryset)), strict=True
        ):
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{provider.name}: {describe(result)}", level)
