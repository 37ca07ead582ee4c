"""Links into the request log list, filtered: what the admin's pages point at."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django.urls import reverse


def log_url(**filters: object) -> str:
    """The request log list, filtered (the admin's own query parameters)."""
    base = reverse("admin:usage_requestlog_changelist")
    return f"{base}?{urlencode(filters)}" if filters else base


def period_filters(first: date, last: date) -> dict[str, str]:
    """UTC days `first` to `last`, as the date filter of the log list writes them."""
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    return {"created_at__gte": str(start), "created_at__lt": str(end)}
