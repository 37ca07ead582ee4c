"""Reads of client API keys, for the request path: a cached keyring, no query per request.

Every key is held in memory by its hash (keys are few; a request for an
unknown key must not reach the database either). Changes reach other
processes within GATEWAY_API_KEYS_REFRESH_SECONDS through `ApiKeyState`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fnmatch import translate

from routing.stamped import StampedCache

from .models import ApiKey, ApiKeyState, expired, hash_secret


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the request path needs of a key; never the secret, nor its hash."""

    id: int
    name: str
    prefix: str
    enabled: bool
    expires_at: datetime | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    budget_per_day: Decimal | None
    budget_per_month: Decimal | None
    matcher: re.Pattern[str] | None  # None: every model

    @classmethod
    def of(cls, key: ApiKey) -> KeyRecord:
        patterns = tuple(key.allowed_models or ())
        matcher = re.compile("|".join(translate(p) for p in patterns)) if patterns else None
        return cls(
            id=key.pk,
            name=key.name,
            prefix=key.prefix,
            enabled=key.enabled,
            expires_at=key.expires_at,
            requests_per_minute=key.requests_per_minute,
            tokens_per_minute=key.tokens_per_minute,
            budget_per_day=key.budget_per_day,
            budget_per_month=key.budget_per_month,
            matcher=matcher,
        )

    def allows(self, model: str) -> bool:
        return self.matcher is None or self.matcher.match(model) is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        return expired(self.expires_at, now)

    @property
    def budgeted(self) -> bool:
        return self.budget_per_day is not None or self.budget_per_month is not None

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


@dataclass(frozen=True)
class Keyring:
    version: int
    by_hash: dict[str, KeyRecord]


def load_keyring() -> Keyring:
    version = ApiKeyState.current()
    keys = ApiKey.objects.only(
        "id",
        "name",
        "prefix",
        "key_hash",
        "enabled",
        "expires_at",
        "allowed_models",
        "requests_per_minute",
        "tokens_per_minute",
    )
    return Keyring(version, {key.key_hash: KeyRecord.of(key) for key in keys})


_cache: StampedCache[Keyring] = StampedCache(
    load_keyring, ApiKeyState.current, lambda k: k.version, "GATEWAY_API_KEYS_REFRESH_SECONDS"
)
invalidate = _cache.invalidate


def find(secret: str) -> KeyRecord | None:
    return _cache.get().by_hash.get(hash_secret(secret))


async def afind(secret: str) -> KeyRecord | None:
    return (await _cache.aget()).by_hash.get(hash_secret(secret))
