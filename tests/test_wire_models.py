"""The /v1/models shapes of both protocols, as units: cards, lists, and
Anthropic's cursor pagination (the live endpoint is in the e2e tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inference.errors import InvalidRequest
from inference.wire import anthropic as anthropic_wire
from inference.wire import openai as openai_wire

CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
NAMES = ["a", "b", "c", "d", "e"]


def test_cards() -> None:
    assert openai_wire.model_card("m", CREATED, "local") == {
        "id": "m", "object": "model", "created": int(CREATED.timestamp()), "owned_by": "local",
    }  # fmt: skip
    assert anthropic_wire.model_card("m", CREATED) == {
        "type": "model", "id": "m", "display_name": "m", "created_at": "2025-01-02T03:04:05Z",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "page", "more"),
    [
        ({}, NAMES, False),
        ({"limit": "2"}, ["a", "b"], True),
        ({"limit": "2", "after_id": "b"}, ["c", "d"], True),
        ({"limit": "2", "after_id": "c"}, ["d", "e"], False),
        ({"limit": "2", "before_id": "d"}, ["b", "c"], True),
        ({"limit": "3", "before_id": "d"}, ["a", "b", "c"], False),
    ],
)
def test_anthropic_pages(query: dict[str, str], page: list[str], more: bool) -> None:
    assert anthropic_wire.paginate(NAMES, query) == (page, more)


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", ""])
def test_anthropic_page_limit_is_checked(limit: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        anthropic_wire.paginate(NAMES, {"limit": limit})
    assert refused.value.param == "limit"


def test_lists() -> None:
    cards = [anthropic_wire.model_card(n, CREATED) for n in ("a", "b")]
    body = anthropic_wire.model_list(cards, has_more=True)
    assert (body["first_id"], body["last_id"], body["has_more"]) == ("a", "b", True)
    assert anthropic_wire.model_list([], has_more=False)["first_id"] is None
    assert openai_wire.model_list(cards) == {"object": "list", "data": cards}
