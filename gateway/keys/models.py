"""Client API keys: who may call the gateway, for which models, how fast.

Only a SHA-256 hash of a key is stored. Keys are 256-bit random strings, so a
fast hash is enough (nothing to brute-force) and lets a lookup be a dict hit.
Moved here from the routing app (`migrations/0001_initial.py` says how).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from functools import lru_cache

from django.db import models
from django.utils import timezone

from routing.models import VersionStamp
from routing.validators import validate_patterns

SECRET_PREFIX = "gw-"
# What is kept in clear to recognise a key in lists and logs: "gw-" + 8 characters.
VISIBLE_CHARS = len(SECRET_PREFIX) + 8


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@lru_cache(maxsize=1024)
def hash_secret(secret: str) -> str:
    # Remembered: the same few keys call all day. Bounded, and a hash is all it
    # keeps besides the secrets that requests already hold in memory.
    return hashlib.sha256(secret.encode()).hexdigest()


def expired(expires_at: datetime | None, now: datetime | None = None) -> bool:
    """Past its expiry, for a key row and for the cached record of one alike."""
    return expires_at is not None and expires_at <= (now or timezone.now())


class ApiKey(models.Model):
    """A key a client sends as `Authorization: Bearer` or `x-api-key`."""

    name = models.CharField(
        max_length=200,
        unique=True,
        help_text="Who or what uses this key; unique, so lists and logs name one key.",
    )
    prefix = models.CharField(
        max_length=VISIBLE_CHARS,
        editable=False,
        help_text="The key's first characters, to recognise it; the rest is never stored.",
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_patterns],
        help_text="fnmatch patterns on the requested model name; empty: every model.",
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: unlimited."
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Input and output tokens together. Empty: unlimited."
    )
    budget_per_day = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True,
        help_text="USD per UTC day; once spent, requests get 429 budget_exceeded. Empty: none.",
    )  # fmt: skip
    budget_per_month = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True,
        help_text="USD per calendar month (UTC). Empty: none.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        # The routing app's table, kept when the model moved (migrations/0001 says why).
        db_table = "routing_apikey"
        ordering = ["name", "id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def __repr__(self) -> str:
        return f"<ApiKey {self.pk} {self.name!r} {self.prefix}…>"

    def set_secret(self) -> str:
        """Give the key a new secret; returned once, only its hash is kept."""
        secret = new_secret()
        self.key_hash = hash_secret(secret)
        self.prefix = secret[:VISIBLE_CHARS]
        return secret

    def is_expired(self, now: datetime | None = None) -> bool:
        return expired(self.expires_at, now)

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        return "expired" if self.is_expired() else "active"


class ApiKeyState(VersionStamp):
    """Changes with any key change, so every process drops its cached keys."""

    class Meta:
        db_table = "routing_apikeystate"  # kept from the routing app, as ApiKey's
