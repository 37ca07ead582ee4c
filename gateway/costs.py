"""A finished request's cost, computed once and shared by its finish listeners
(the request log and the key's budget)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from routing import selectors
from routing.pricing import ZERO, cost, prices_for

if TYPE_CHECKING:
    from .record import RequestContext

# Counting tokens is free upstream too: not billed.
UNBILLED_ENDPOINTS = frozenset({"messages.count_tokens"})


def cost_of(ctx: RequestContext) -> Decimal:
    if ctx.cost is None:
        served, snapshot = ctx.served, selectors.last_snapshot()
        if served is None or snapshot is None or ctx.endpoint in UNBILLED_ENDPOINTS:
            ctx.cost = ZERO
        else:
            prices = prices_for(snapshot, ctx.requested_model, served.backend, served.model)
            ctx.cost = cost(prices, ctx.input_tokens, ctx.output_tokens)
    return ctx.cost
