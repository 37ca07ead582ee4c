"""The request log and usage app's config."""

from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "gateway.usage"
    label = "usage"
    verbose_name = "Request log and usage"
    default_auto_field = "django.db.models.BigAutoField"
