"""Anthropic's /v1/models shapes: a model object, and a page of them with its
cursor pagination (limit, after_id, before_id)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ...errors import InvalidRequest


def model_card(name: str, created: datetime) -> dict[str, Any]:
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def paginate(names: list[str], query: Mapping[str, str]) -> tuple[list[str], bool]:
    """The page of the sorted `names` the query asks for, and whether more follow."""
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000", param="limit")
    limit = int(raw)
    after, before = query.get("after_id"), query.get("before_id")
    if before:
        names = [n for n in names if n < before]
        return names[-limit:], len(names) > limit
    if after:
        names = [n for n in names if n > after]
    return names[:limit], len(names) > limit


def model_list(cards: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": cards,
        "has_more": has_more,
        "first_id": cards[0]["id"] if cards else None,
        "last_id": cards[-1]["id"] if cards else None,
    }
