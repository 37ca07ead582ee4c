"""Reads for the usage page, from the daily rollup (`UsageDay`), never the log:
a month is a few hundred rollup rows, where the log holds hundreds of thousands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum

from gateway.keys.models import ApiKey

from .models import ANONYMOUS_KEY, UsageDay

CENTS = Decimal("0.0001")  # spend is shown to a hundredth of a cent
ANONYMOUS = "none"  # the key filter's value for requests made without a key
_COUNTS = ("requests", "errors", "input_tokens", "output_tokens")
_SUMS = {name: Sum(name) for name in (*_COUNTS, "cost")}


@dataclass(frozen=True, slots=True)
class UsageRow:
    key_id: int | None  # None: requests made without a key
    key: str
    model: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: Decimal  # USD

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class DayTotal:
    day: date
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: Decimal  # USD

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _sums(row: dict[str, Any]) -> dict[str, Any]:
    sums: dict[str, Any] = {name: int(row.get(name) or 0) for name in _COUNTS}
    sums["cost"] = Decimal(row.get("cost") or 0).quantize(CENTS)
    return sums


def _period(since: date, until: date, key: str) -> QuerySet[UsageDay]:
    """`key`: a key id, ANONYMOUS for requests made without a key, or "" for all."""
    query = UsageDay.objects.filter(day__gte=since, day__lte=until)
    if key == ANONYMOUS:
        return query.filter(key_id=ANONYMOUS_KEY)
    return query.filter(key_id=int(key)) if key else query


def daily_totals(since: date, until: date, key: str = "") -> list[DayTotal]:
    """One total per UTC day from `since` to `until`, days without requests included."""
    found = {
        row["day"]: row
        for row in _period(since, until, key).values("day").annotate(**_SUMS).order_by()
    }
    totals = []
    for offset in range((until - since).days + 1):
        day = since + timedelta(days=offset)
        row = found.get(day, {})
        totals.append(DayTotal(day, **_sums(row)))
    return totals


def usage_by_key_and_model(since: date, until: date, key: str = "") -> list[UsageRow]:
    """The period's totals per key and requested model, most tokens first."""
    grouped = list(
        _period(since, until, key).values("key_id", "model").annotate(**_SUMS).order_by()
    )
    names = {
        k.pk: f"{k.name} ({k.prefix}…)"
        for k in ApiKey.objects.filter(pk__in={r["key_id"] for r in grouped}).only(
            "name", "prefix"
        )
    }
    rows = [
        UsageRow(
            key_id=row["key_id"] or None,
            key=names.get(row["key_id"], f"deleted key #{row['key_id']}")
            if row["key_id"] != ANONYMOUS_KEY
            else "(no key)",
            model=row["model"],
            **_sums(row),
        )
        for row in grouped
    ]
    return sorted(rows, key=lambda r: (-r.tokens, -r.requests, r.key, r.model))
