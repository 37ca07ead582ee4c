"""The routing app: connects its change signals and registers the key check."""

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Gateway routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.checks import register

        from . import signals
        from .crypto import check_keys

        signals.connect()
        register(check_keys)
