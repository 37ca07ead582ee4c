"""Reads of the request log for the usage page: per key, model and day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from .models import RequestLog

ANONYMOUS = "none"  # the key filter's value for requests made without a key


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: date
    key_id: int | None
    key: str
    model: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class DayTotal:
    day: date
    requests: int
    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def usage(since: date, key: str = "") -> list[UsageRow]:
    """Requests and tokens from `since` (UTC days), newest day first.

    `key`: a key id, ANONYMOUS for requests made without a key, or "" for all.
    """
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    query = RequestLog.objects.filter(created_at__gte=start)
    if key == ANONYMOUS:
        query = query.filter(api_key__isnull=True)
    elif key:
        query = query.filter(api_key_id=int(key))
    grouped = (
        query.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "api_key_id", "api_key__name", "api_key__prefix", "requested_model")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status__gte=400)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
        .order_by("-day", "api_key__name", "requested_model")
    )
    return [
        UsageRow(
            day=row["day"],
            key_id=row["api_key_id"],
            key=f"{row['api_key__name']} ({row['api_key__prefix']}…)"
            if row["api_key_id"]
            else "(no key)",
            model=row["requested_model"] or "—",
            requests=row["requests"],
            errors=row["errors"],
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
        )
        for row in grouped
    ]


def daily_totals(rows: list[UsageRow], since: date, until: date) -> list[DayTotal]:
    """One total per day from `since` to `until`, days without requests included."""
    totals: dict[date, list[int]] = {}
    for row in rows:
        total = totals.setdefault(row.day, [0, 0, 0])
        total[0] += row.requests
        total[1] += row.input_tokens
        total[2] += row.output_tokens
    days = (until - since).days + 1
    return [
        DayTotal(day, *totals.get(day, (0, 0, 0)))
        for day in (since + timedelta(days=i) for i in range(days))
    ]
