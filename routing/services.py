"""The routing service: which backend answers a requested model name."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from inference.base import Backend
from inference.errors import ModelNotFound

from . import selectors
from .backends import local_backend
from .models import LocalModel


async def resolve_backend(model_name: str) -> Backend:
    local = await selectors.get_enabled_local_model(model_name)
    if local is None:
        raise ModelNotFound(
            f"The model {model_name!r} does not exist or is not enabled.", param="model"
        )
    return local_backend(local)


def register_local_model(name: str, path: Path) -> LocalModel:
    """Create or update the LocalModel row for a folder (used by the demo builder)."""
    models_dir = Path(settings.GATEWAY_MODELS_DIR).resolve()
    path = path.resolve()
    # Store paths under the models dir relative to it, so the data dir can move.
    stored = str(path.relative_to(models_dir)) if path.is_relative_to(models_dir) else str(path)
    model, _ = LocalModel.objects.update_or_create(
        name=name, defaults={"path": stored, "enabled": True}
    )
    return model
