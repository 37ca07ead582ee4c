"""Builds backends from the configuration; owns the process-wide MLX engine."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from inference.base import Backend
from inference.errors import ModelNotFound
from inference.local.backend import LocalBackend
from inference.local.engine import Engine

from .models import LocalModel
from .resolution import Hop

if TYPE_CHECKING:
    from .selectors import Snapshot

_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The one MLX engine of this process, created on first use."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = Engine(
                    max_resident_models=settings.GATEWAY_MAX_RESIDENT_MODELS,
                    max_batch_size=settings.GATEWAY_MAX_BATCH_SIZE,
                    prefill_step_size=settings.GATEWAY_PREFILL_STEP_SIZE,
                )
    return _engine


def local_backend(model: LocalModel) -> LocalBackend:
    return LocalBackend(get_engine(), model.spec(), model.defaults())


def backend_for(hop: Hop, snapshot: Snapshot) -> Backend:
    if hop.target.kind == "local":
        model = snapshot.local_models.get(hop.target.name)
        if model is None:
            raise ModelNotFound(f"local model {hop.target.name!r} is not enabled", param="model")
        return local_backend(model)
    raise ModelNotFound(f"provider {hop.target.name!r} has no client yet", param="model")


def preload_local_models() -> None:
    """Start loading every enabled `preload` model (in the background)."""
    engine = get_engine()
    for model in LocalModel.objects.filter(enabled=True, preload=True):
        engine.preload(model.spec())
