"""GET /health: liveness and what the local engine is doing, cheap enough to poll."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.http import HttpRequest
from ninja import Router

from routing.backends import get_engine

router = Router(tags=["health"])


@router.get("/health")
async def health(request: HttpRequest) -> dict[str, Any]:
    """Liveness, plus what the local engine is doing; deep checks: `manage.py healthcheck`."""
    return {"status": "ok", "engine": asdict(get_engine().stats())}
