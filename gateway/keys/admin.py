"""Django admin for client API keys: the secret is shown on the page "Save" redirects to.

The page is reached by POST-redirect-GET, so reloading it shows it again and
never creates another key. The secret waits for it in the admin user's session,
Fernet-encrypted and readable for SHOW_SECONDS only (Fernet's own TTL); after
that the page says it is gone.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from routing.crypto import fernet
from routing.validators import validate_pattern

from .models import ApiKey, expired
from .services import set_keys_enabled

# The new secret travels from save_model to response_add on the request object,
# then to the page in the session, encrypted: never in clear, a cookie or a message.
_SECRET_ATTR = "_gateway_new_api_key_secret"
_SESSION_KEY = "gateway_new_api_keys"  # key id: Fernet token of its secret
SHOW_SECONDS = 600
clock = time.time  # injected by tests


def remember_secret(request: HttpRequest, key_id: int, secret: str) -> None:
    waiting = request.session.get(_SESSION_KEY, {})
    waiting[str(key_id)] = fernet().encrypt_at_time(secret.encode(), int(clock())).decode()
    request.session[_SESSION_KEY] = waiting


def recall_secret(request: HttpRequest, key_id: int) -> str | None:
    """The secret while it may still be shown; once it may not, it is forgotten."""
    waiting = request.session.get(_SESSION_KEY, {})
    token = waiting.get(str(key_id))
    if token is None:
        return None
    try:
        return fernet().decrypt_at_time(token.encode(), SHOW_SECONDS, int(clock())).decode()
    except InvalidToken:
        del waiting[str(key_id)]
        request.session[_SESSION_KEY] = waiting
        return None


class ApiKeyForm(forms.ModelForm):
    models_text = forms.CharField(
        label="Allowed models",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="fnmatch patterns on the requested model name, one per line or "
        "comma-separated (e.g. demo, gpt-4o*, claude-*). Empty: every model.",
    )

    class Meta:
        model = ApiKey
        fields = ("name", "enabled", "expires_at", "requests_per_minute", "tokens_per_minute",
                  "budget_per_day", "budget_per_month")  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["models_text"] = "\n".join(self.instance.allowed_models or [])

    def clean_models_text(self) -> list[str]:
        patterns = [p for p in re.split(r"[\s,]+", self.cleaned_data["models_text"]) if p]
        errors: list[ValidationError] = []
        for pattern in patterns:
            try:
                validate_pattern(pattern)
            except ValidationError as exc:
                errors.append(ValidationError(f"{pattern}: {exc.messages[0]}"))
        if errors:
            raise ValidationError(errors)
        return list(dict.fromkeys(patterns))

    def clean_expires_at(self) -> datetime | None:
        expires_at: datetime | None = self.cleaned_data.get("expires_at")
        # An unchanged past expiry is what an expired key has: editing it stays possible.
        if expires_at is not None and "expires_at" in self.changed_data and expired(expires_at):
            raise ValidationError(
                "This time has passed: the key would be expired at once. "
                "Choose a later time, or disable the key instead."
            )
        return expires_at

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean returns, typed as never None
        self.instance.allowed_models = data.get("models_text", self.instance.allowed_models)
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "name",
        "key_display",
        "enabled",
        "status",
        "expires_at",
        "models_display",
        "requests_per_minute",
        "tokens_per_minute",
        "last_used_at",
        "usage_link",
    )
    list_filter = ("enabled",)
    search_fields = ("name", "prefix")
    readonly_fields = ("key_display", "created_at", "last_used_at")
    actions = ["enable_keys", "disable_keys"]
    change_list_template = "admin/keys/apikey/change_list.html"

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        main = ("name", "enabled", "expires_at", "models_text")
        fieldsets: list[Any] = [
            (None, {"fields": main}),
            ("Rate limits (per minute; empty: unlimited)", {"fields": ("requests_per_minute",
                                                                       "tokens_per_minute")}),
            ("Budgets (USD; empty: none)", {"fields": ("budget_per_day", "budget_per_month")}),
        ]  # fmt: skip
        if obj is not None:
            fieldsets.append(("Key", {"fields": ("key_display", "created_at", "last_used_at")}))
        return fieldsets

    @admin.display(description="key", ordering="prefix")
    def key_display(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…" if obj.prefix else "—"

    @admin.display(description="allowed models")
    def models_display(self, obj: ApiKey) -> str:
        return ", ".join(obj.allowed_models) if obj.allowed_models else "all"

    @admin.display(description="usage")
    def usage_link(self, obj: ApiKey) -> str:
        url = reverse("admin:usage_requestlog_usage")
        return format_html('<a href="{}?key={}">usage</a>', url, obj.pk)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            setattr(request, _SECRET_ATTR, obj.set_secret())
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(request, _SECRET_ATTR, None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        delattr(request, _SECRET_ATTR)
        remember_secret(request, obj.pk, secret)
        return redirect("admin:keys_apikey_created", obj.pk)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.created_view)
        return [path("<int:key_id>/created/", view, name="keys_apikey_created"),
                *super().get_urls()]  # fmt: skip

    def created_view(self, request: HttpRequest, key_id: int) -> HttpResponse:
        key = get_object_or_404(ApiKey, pk=key_id)
        if not self.has_view_permission(request, key):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.model._meta,
            "key": key,
            "secret": recall_secret(request, key.pk),
            "minutes": SHOW_SECONDS // 60,
            "base": request.build_absolute_uri("/").rstrip("/"),
        }
        response = TemplateResponse(request, "admin/keys/apikey/created.html", context)
        response["Cache-Control"] = "no-store"  # the one page that holds the secret
        return response

    @admin.action(description="Enable selected keys")
    def enable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = set_keys_enabled(queryset, True)
        self.message_user(request, f"{count} key(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable selected keys")
    def disable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = set_keys_enabled(queryset, False)
        self.message_user(request, f"{count} key(s) disabled.", messages.SUCCESS)
