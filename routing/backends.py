"""Builds backends from the configuration; owns the process-wide MLX engine."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

from django.conf import settings

from inference.base import Backend
from inference.cloud.anthropic import AnthropicBackend
from inference.cloud.config import ProviderConfig, RetryPolicy, Timeouts
from inference.cloud.model_server import ModelServerBackend
from inference.cloud.openai import OpenAIBackend
from inference.errors import ModelNotFound

from .breakers import BreakerSettings, Gate, breakers
from .models import LocalModel
from .provider_config import provider_config
from .resolution import Hop, Target

if TYPE_CHECKING:
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


def local_backend(model: LocalModel, deadline: float | None = None) -> Backend:
    """`deadline` (monotonic): the request's total budget, which a model server's
    client keeps to itself (the in-process engine is timed by the failover walk)."""
    if settings.GATEWAY_LOCAL_MODELS_URL:
        return ModelServerBackend(served_elsewhere(model), model.name, deadline)
    from inference.local.backend import LocalBackend

    return LocalBackend(get_engine(), model.spec(), model.defaults(), prefill=model.accepts_prefill)


def served_elsewhere(model: LocalModel) -> ProviderConfig:
    """A local model that lives in this deployment's model server (GATEWAY_LOCAL_MODELS_URL):
    named and timed as a local model, asked once per target (as local models are).
    A whole answer's head comes when the model has generated it: like the
    in-process engine's answer it has the request's whole budget, where a
    stream's first token keeps the local first-token limit."""
    return _served_elsewhere(
        model.name,
        model.accepts_prefill,
        settings.GATEWAY_LOCAL_MODELS_URL,
        settings.GATEWAY_LOCAL_MODELS_KEY,
        settings.GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT,
        settings.GATEWAY_REQUEST_TIMEOUT,
    )


# Per process, by everything it is made from: built once, not per request (about
# 10 us a request otherwise, measured; a cached one costs under 1 us).
@functools.lru_cache(maxsize=256)
def _served_elsewhere(
    name: str, prefill: bool, url: str, key: str, first_token: float, total: float
) -> ProviderConfig:
    return ProviderConfig(
        name=f"local:{name}",
        kind="model-server",
        base_url=url,
        api_key=key,
        timeouts=Timeouts(first_byte=total, first_token=first_token, total=total),
        retry=RetryPolicy(max_retries=0),
        prefill=prefill,
    )


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
        return local_backend(model, deadline)
    config = config_for(snapshot, hop.target.name)
    if config.kind == "anthropic":
        return AnthropicBackend(config, hop.model, deadline)
    if config.kind == "model-server":
        return ModelServerBackend(config, hop.model, deadline)
    return OpenAIBackend(config, hop.model, deadline)


def breaker_settings(hop: Hop, snapshot: Snapshot) -> BreakerSettings:
    if hop.target.kind == "local":
        return BreakerSettings(
            settings.GATEWAY_LOCAL_BREAKER_FAIL_MAX, settings.GATEWAY_LOCAL_BREAKER_RESET_SECONDS
        )
    provider = snapshot.providers[hop.target.name]
    return BreakerSettings(provider.breaker_fail_max, provider.breaker_reset_timeout)


def breaker_name(hop: Hop) -> str:
    """The deployment's breaker: one per provider + upstream model, one per local model."""
    if hop.target.kind == "local":
        return f"local:{hop.target.name}"
    return f"{hop.target.name}/{hop.model}"


def gate_for(hop: Hop, snapshot: Snapshot) -> Gate:
    provider = None if hop.target.kind == "local" else hop.target.name
    return Gate(breakers(), breaker_settings(hop, snapshot), breaker_name(hop), provider)


def first_token_timeout(hop: Hop, snapshot: Snapshot) -> float:
    """Request to first content token (a local model's load included)."""
    if hop.target.kind == "local":
        return float(settings.GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT)
    return config_for(snapshot, hop.target.name).timeouts.first_token


def preload_local_models() -> None:
    """Start loading every enabled `preload` model (in the background); none in a
    request worker whose local models live in a model server."""
    if settings.GATEWAY_LOCAL_MODELS_URL:
        return
    engine = get_engine()
    for model in LocalModel.objects.filter(enabled=True, preload=True):
        engine.preload(model.spec())


def deployments(snapshot: Snapshot) -> dict[str, tuple[str, BreakerSettings]]:
    """Every breaker the routing names, by name: (kind, its settings). Each local
    model; each provider's own; each provider + upstream model in a chain (a
    target that passes the requested name on shows up once it is used)."""
    found: dict[str, tuple[str, BreakerSettings]] = {}
    for name in snapshot.local_models:
        hop = Hop(Target("local", name), name)
        found[breaker_name(hop)] = ("local", breaker_settings(hop, snapshot))
    for name in snapshot.providers:
        found[name] = ("provider", breaker_settings(Hop(Target("provider", name), ""), snapshot))
    for mapping in snapshot.table.mappings:
        for target in mapping.targets:
            if (
                target.kind == "provider"
                and target.upstream_model
                and target.name in snapshot.providers
            ):
                hop = Hop(target, target.upstream_model)
                found[breaker_name(hop)] = ("deployment", breaker_settings(hop, snapshot))
    return found


def deployment_breakers(provider: str) -> list[tuple[str, str]]:
    """(breaker, state) of a provider's own breaker and each of its deployments'."""
    from .selectors import snapshot as current

    box = breakers()
    named = {n: c for n, (_, c) in deployments(current()).items()}
    seen = box.states()
    names = {n for n in (*named, *seen) if n == provider or n.startswith(f"{provider}/")}
    return [(n, seen.get(n) or box.state(n, named.get(n))) for n in sorted(names)]
