"""Builds backends from the configuration; owns the process-wide MLX engine."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from inference.base import Backend
from inference.cloud.anthropic import AnthropicBackend
from inference.cloud.config import ProviderConfig
from inference.cloud.openai import OpenAIBackend
from inference.errors import ModelNotFound

from .breakers import BreakerSettings
from .models import LocalModel, provider_config
from .resolution import Hop

if TYPE_CHECKING:
    from inference.local.backend import LocalBackend
    from inference.local.engine import Engine

    from .selectors import Snapshot

_engine: Engine | None = None
_engine_lock = threading.Lock()
# Decrypted provider configs, per routing version: no Fernet work per request.
_configs: dict[tuple[int, str], ProviderConfig] = {}


def get_engine() -> Engine:
    """The one MLX engine of this process, created on first use."""
    global _engine
    if _engine is None:
        # Imported on first use: the engine loads mlx-lm (about a second), which a
        # management command that never serves a local model should not wait for.
        from inference.local.engine import Engine

        with _engine_lock:
            if _engine is None:
                _engine = Engine(
                    max_resident_models=settings.GATEWAY_MAX_RESIDENT_MODELS,
                    max_batch_size=settings.GATEWAY_MAX_BATCH_SIZE,
                    prefill_step_size=settings.GATEWAY_PREFILL_STEP_SIZE,
                    prompt_cache_bytes=settings.GATEWAY_PROMPT_CACHE_BYTES,
                )
    return _engine


def local_backend(model: LocalModel) -> LocalBackend:
    from inference.local.backend import LocalBackend

    return LocalBackend(get_engine(), model.spec(), model.defaults())


def config_for(snapshot: Snapshot, name: str) -> ProviderConfig:
    key = (snapshot.version, name)
    config = _configs.get(key)
    if config is None:
        if len(_configs) > 256:
            _configs.clear()
        config = _configs[key] = provider_config(snapshot.providers[name])
    return config


def backend_for(hop: Hop, snapshot: Snapshot, deadline: float | None = None) -> Backend:
    """The backend of one hop. Raises CredentialError for an unusable key."""
    if hop.target.kind == "local":
        model = snapshot.local_models.get(hop.target.name)
        if model is None:
            raise ModelNotFound(f"local model {hop.target.name!r} is not enabled", param="model")
        return local_backend(model)
    config = config_for(snapshot, hop.target.name)
    if config.kind == "anthropic":
        return AnthropicBackend(config, hop.model, deadline)
    return OpenAIBackend(config, hop.model, deadline)


def breaker_settings(hop: Hop, snapshot: Snapshot) -> BreakerSettings:
    if hop.target.kind == "local":
        return BreakerSettings(
            settings.GATEWAY_LOCAL_BREAKER_FAIL_MAX, settings.GATEWAY_LOCAL_BREAKER_RESET_SECONDS
        )
    provider = snapshot.providers[hop.target.name]
    return BreakerSettings(provider.breaker_fail_max, provider.breaker_reset_timeout)


def breaker_name(hop: Hop) -> str:
    return f"local:{hop.target.name}" if hop.target.kind == "local" else hop.target.name


def preload_local_models() -> None:
    """Start loading every enabled `preload` model (in the background)."""
    engine = get_engine()
    for model in LocalModel.objects.filter(enabled=True, preload=True):
        engine.preload(model.spec())
