"""Any routing change bumps the version stamp that every process watches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from . import selectors
from .models import (
    BackendMapping,
    CloudCredential,
    LocalModel,
    MappingTarget,
    Provider,
    RoutingState,
    RoutingSwitch,
)


def on_change(invalidate: Callable[[], None], bump: Callable[[], None]) -> Callable[..., None]:
    """A save/delete receiver: drop this process's cache now, and bump the stamp
    other processes watch once the change is committed."""

    def receiver(sender: Any, **kwargs: Any) -> None:
        if kwargs.get("raw"):
            return  # loaddata: the stamp is bumped by whoever loads
        invalidate()
        transaction.on_commit(bump)

    return receiver


def _bump() -> None:
    RoutingState.bump()
    selectors.invalidate()


_changed = on_change(selectors.invalidate, _bump)


def _setting_changed(setting: str, **kwargs: Any) -> None:
    # The routing mode is part of the snapshot (override_settings in tests).
    if setting in {"ENABLE_CLOUD_ROUTING", "GATEWAY_MODELS_DIR", "GATEWAY_DEFAULT_MAX_TOKENS"}:
        selectors.invalidate()


def connect() -> None:
    setting_changed.connect(_setting_changed, dispatch_uid="routing-settings")
    routing = (LocalModel, Provider, CloudCredential, BackendMapping, MappingTarget, RoutingSwitch)
    for model in routing:
        post_save.connect(_changed, sender=model, dispatch_uid=f"routing-{model.__name__}-save")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"routing-{model.__name__}-del")
