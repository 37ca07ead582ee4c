"""Who may call the API. Client keys are not enforced yet: every caller is admitted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest

if TYPE_CHECKING:
    from .context import RequestContext


async def authenticate(request: HttpRequest, ctx: RequestContext) -> None:
    """Identify the caller from `Authorization: Bearer` or `x-api-key`."""


async def admit(ctx: RequestContext, model: str) -> None:
    """May this caller use this model now (allowed patterns, rate limits)?"""
