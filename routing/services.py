"""The routing service: which backends answer a requested model name, in order."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from inference.base import Backend
from inference.errors import ModelNotFound

from . import selectors
from .backends import backend_for
from .models import LocalModel
from .resolution import Route


async def resolve_route(model_name: str) -> Route:
    snapshot = await selectors.asnapshot()
    route = snapshot.table.resolve(model_name)
    if route is None:
        raise ModelNotFound(
            f"The model {model_name!r} does not exist or is not enabled.", param="model"
        )
    return route


async def resolve_backend(model_name: str) -> Backend:
    """The primary backend of the route (failover is the caller's next step)."""
    route = await resolve_route(model_name)
    snapshot = await selectors.asnapshot()
    return backend_for(route.chain[0], snapshot)


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
