"""The client API keys app: its config, which connects the keyring's cache to key changes."""

from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "gateway.keys"
    label = "keys"
    verbose_name = "Client API keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals

        signals.connect()
