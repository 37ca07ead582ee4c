"""What a request cost: its tokens at the prices of the target that served it.

Prices are USD per million tokens: a local model's own (default 0), or those
set on a provider target of a mapping's chain (none set: not priced, 0). They
are read from the routing snapshot the process holds, so pricing a finished
request costs no query.
"""

from __future__ import annotations

from decimal import Decimal

from .selectors import Snapshot

LOCAL_PREFIX = "local:"
MILLION = Decimal(1_000_000)
CENT_FRACTIONS = Decimal("0.00000001")  # the log's precision (8 places)
ZERO = Decimal(0)


def prices_for(
    snapshot: Snapshot, requested: str, backend: str, served_model: str
) -> tuple[Decimal, Decimal] | None:
    """The prices of the target that answered (backend as the request log names it)."""
    if backend.startswith(LOCAL_PREFIX):
        model = snapshot.local_models.get(backend.removeprefix(LOCAL_PREFIX))
        return (model.input_price, model.output_price) if model else None
    route = snapshot.table.resolve(requested)
    for hop in route.chain if route else ():
        target = hop.target
        if target.kind == "provider" and target.name == backend and hop.model == served_model:
            return target.prices
    return None


def cost(prices: tuple[Decimal, Decimal] | None, input_tokens: int, output_tokens: int) -> Decimal:
    if prices is None:
        return ZERO
    total = (input_tokens * prices[0] + output_tokens * prices[1]) / MILLION
    return total.quantize(CENT_FRACTIONS)
