"""Who may call the API: client keys, the models they may use, and how fast.

A key comes as `Authorization: Bearer <key>` (OpenAI SDK, and the Anthropic
SDK) or `x-api-key: <key>` (Anthropic's own header). Keys are looked up in the
per-process keyring (`gateway.keys.selectors`): no database query per request.
With GATEWAY_REQUIRE_API_KEYS off, a caller without a known key is let in
anonymously; a known key still gets its models and limits.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from django.conf import settings
from django.http import HttpRequest

from gateway.costs import cost_of
from inference.errors import AuthenticationFailed, PermissionDenied, RateLimited

from . import budgets
from . import selectors as keyring
from .ratelimit import limiter
from .selectors import KeyRecord

if TYPE_CHECKING:
    from gateway.record import RequestContext

# Endpoints whose tokens are not generated, so do not count against a key's limit.
UNCHARGED_ENDPOINTS = frozenset({"messages.count_tokens"})


def presented_key(request: HttpRequest) -> str:
    return key_in(request.headers)


def key_in(headers: Mapping[str, str]) -> str:
    """The key sent in these headers (Django's, or a dict with lower-case names)."""
    return headers.get("x-api-key", "").strip() or _bearer(headers)


def bearer_token(request: HttpRequest) -> str:
    """The token of an `Authorization: Bearer` header, or ""."""
    return _bearer(request.headers)


def _bearer(headers: Mapping[str, str]) -> str:
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def authenticate(request: HttpRequest, ctx: RequestContext) -> None:
    """Identify the caller from `Authorization: Bearer` or `x-api-key`."""
    required = settings.GATEWAY_REQUIRE_API_KEYS
    secret = presented_key(request)
    if settings.GATEWAY_MODEL_SERVER_KEY:
        # A model server: one key, the front tier's; its own limits were applied there.
        if not hmac.compare_digest(secret.encode(), settings.GATEWAY_MODEL_SERVER_KEY.encode()):
            raise AuthenticationFailed("Invalid or missing model server key.")
        return
    if not secret:
        if required:
            raise AuthenticationFailed(
                "Missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`."
            )
        return
    key = await keyring.afind(secret)
    if key is None:
        if required:
            raise AuthenticationFailed("Invalid API key.")  # never echo what was sent
        return  # keys optional: someone else's key (an SDK's dummy) is no key
    # A known key that was revoked is refused even when keys are optional.
    if not key.enabled:
        raise AuthenticationFailed(f"The API key {key.prefix}… is disabled.")
    if key.is_expired():
        raise AuthenticationFailed(f"The API key {key.prefix}… has expired.")
    ctx.api_key = key


def allowed(ctx: RequestContext, model: str) -> bool:
    key: KeyRecord | None = ctx.api_key
    return key is None or key.allows(model)


def permit(ctx: RequestContext, model: str) -> None:
    """May this caller use this model at all (the key's allowed model patterns)?"""
    if not allowed(ctx, model):
        raise PermissionDenied(
            f"The API key {ctx.api_key.prefix}… is not allowed to use the model {model!r}.",
            param="model",
        )


async def admit(ctx: RequestContext, model: str, *, count: bool = True) -> None:
    """May this caller use this model now (allowed patterns, rate limits)?"""
    permit(ctx, model)
    await within_limits(ctx, count=count)


async def within_limits(ctx: RequestContext, *, count: bool = True) -> None:
    """Refuse a key over its limits. `count=False` (listing models): a key over
    its limit is refused, but the listing does not use up one of its requests."""
    key: KeyRecord | None = ctx.api_key
    if key is not None and key.budgeted:
        budget = {"day": key.budget_per_day, "month": key.budget_per_month}
        await budgets.check(key.id, key.prefix, budget)
    if key is None or not key.limited:
        return
    refusal = await limiter().admit(
        key.id, key.requests_per_minute, key.tokens_per_minute, count=count
    )
    if refusal is not None:
        raise RateLimited(
            f"Rate limit reached for the API key {key.prefix}…: "
            f"{refusal.limit} {refusal.reason} per minute. "
            f"Try again in {math.ceil(max(refusal.retry_after, 1))} s.",
            retry_after=refusal.retry_after,
        )


def charge(ctx: RequestContext) -> None:
    """Finish listener: a finished request's tokens count against its key's limit,
    its cost against the key's budgets."""
    key: KeyRecord | None = ctx.api_key
    if key is not None and key.budgeted:
        budgets.charge(key.id, cost_of(ctx))
    if key is None or key.tokens_per_minute is None or ctx.endpoint in UNCHARGED_ENDPOINTS:
        return
    tokens = ctx.input_tokens + ctx.output_tokens
    if tokens > 0:
        limiter().charge(key.id, tokens)
