"""Writes to the routing configuration (HackSoft style: services write)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .models import CloudCredential, LocalModel, Provider


def register_local_model(name: str, path: Path) -> LocalModel:
    """Create or update the LocalModel row for a folder (used by the demo builder)."""
    models_dir = Path(settings.GATEWAY_MODELS_DIR).resolve()
    path = path.resolve()
    # Store paths under the models dir relative to it, so the data dir can move.
    stored = str(path.relative_to(models_dir)) if path.is_relative_to(models_dir) else str(path)
    # A rebuild updates the path; whether the model is enabled stays the admin's call.
    model, _ = LocalModel.objects.update_or_create(
        name=name, defaults={"path": stored}, create_defaults={"path": stored, "enabled": True}
    )
    return model


def set_provider_key(provider: Provider, key: str | None, *, source_env: str = "") -> None:
    """Set or replace a provider's API key (stored encrypted), or clear it (None).

    The one write path for provider keys: the provider form and import_config.
    """
    if key is None:
        CloudCredential.objects.filter(provider=provider).delete()
        return
    credential = CloudCredential.objects.filter(provider=provider).first()
    credential = credential or CloudCredential(provider=provider)
    credential.set_key(key, source_env=source_env)
    credential.save()
