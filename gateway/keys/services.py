"""Writes of client API keys (services write; `selectors` reads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import QuerySet

from .models import ApiKey, ApiKeyState
from .selectors import invalidate


def create_api_key(
    name: str,
    *,
    allowed_models: Sequence[str] = (),
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    expires_at: datetime | None = None,
    budget_per_day: Decimal | str | None = None,
    budget_per_month: Decimal | str | None = None,
) -> tuple[ApiKey, str]:
    """A new enabled key and its secret: the only time the secret exists in clear."""
    key = ApiKey(
        name=name,
        allowed_models=list(allowed_models),
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        expires_at=expires_at,
        budget_per_day=budget_per_day,
        budget_per_month=budget_per_month,
    )
    secret = key.set_secret()
    key.full_clean()
    key.save()
    return key, secret


def set_keys_enabled(keys: QuerySet[ApiKey], enabled: bool) -> int:
    """Enable or disable keys in bulk (an update sends no signal: bump the stamp here)."""
    with transaction.atomic():
        changed = keys.update(enabled=enabled)
        transaction.on_commit(keys_changed)
    invalidate()
    return changed


def keys_changed() -> None:
    """Every process drops its cached keys: this one now, others at their next check."""
    ApiKeyState.bump()
    invalidate()
