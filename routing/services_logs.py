"""Writes of the request log: batches from the gateway's writer, and pruning."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import ApiKey, RequestLog

PRUNE_CHUNK = 10_000


def write_request_logs(rows: Sequence[dict[str, Any]]) -> int:
    """Insert a batch of rows (RequestLog field values) and stamp each key's last use."""
    if not rows:
        return 0
    used: dict[int, datetime] = {}
    for row in rows:
        key_id = row.get("api_key_id")
        if key_id is not None:
            used[key_id] = max(used.get(key_id, row["created_at"]), row["created_at"])
    with transaction.atomic():
        # A key deleted since its request was answered: keep the row, without the key.
        existing = set(ApiKey.objects.filter(id__in=used).values_list("id", flat=True))
        objs = [RequestLog(**row) for row in rows]
        for obj in objs:
            if obj.api_key_id not in existing:
                obj.api_key_id = None
        RequestLog.objects.bulk_create(objs)
        # An update, not save(): no signal, so the cached keyring stays valid.
        for key_id in existing:
            stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=used[key_id])
            ApiKey.objects.filter(stale, id=key_id).update(last_used_at=used[key_id])
    return len(objs)


def prune_request_log(older_than_days: int, *, now: datetime | None = None) -> int:
    """Delete rows older than that many days, in chunks so no transaction grows huge."""
    cutoff = (now or timezone.now()) - timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = list(
            RequestLog.objects.filter(created_at__lt=cutoff)
            .order_by()
            .values_list("id", flat=True)[:PRUNE_CHUNK]
        )
        if not ids:
            return deleted
        deleted += RequestLog.objects.filter(id__in=ids).delete()[0]
