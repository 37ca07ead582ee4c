"""OpenAI's /v1/models shapes: a model object and the list of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def model_card(name: str, created: datetime, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created.timestamp()), "owned_by": owner}


def model_list(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": cards}
