"""Work done once per server process: at start (`start`, called by each entry
point), and on a clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from typing import Any

from django.db import DatabaseError

logger = logging.getLogger(__name__)


_started = False


def start() -> None:
    """Start this process's gateway: finish listeners, the request log's writer,
    local models preloaded, the shutdown hook. Each entry point calls it
    (gateway.edge.server, gateway.asgi); the first call does the work, later
    ones nothing. Per process."""
    global _started
    if _started:
        return
    _started = True
    from routing.backends import preload_local_models

    from . import context, dashboard, metrics
    from .keys import auth
    from .usage import writer as request_log

    context.on_finish(metrics.record)
    context.on_finish(dashboard.publish)
    context.on_finish(auth.charge)  # tokens against the key's per-minute limit
    context.on_finish(request_log.record)
    # Started now, not at the first request: an idle gateway still prunes its log.
    request_log.start()
    try:
        preload_local_models()
    except DatabaseError as exc:  # not migrated yet: models load on first use
        logger.warning("preloading skipped: %s", exc)
    _register_shutdown()
    # Django, pydantic and mlx leave a few hundred thousand long-lived objects:
    # keep them out of the cyclic collector's passes, which otherwise walk them
    # all again every few hundred requests.
    gc.collect()
    gc.freeze()


async def shutdown() -> None:
    """Close upstream pools, stop the engine, write the request log, while the loop runs.

    Each step runs even if one before it failed: the request log is written last
    and must not be lost to a pool that would not close.
    """
    from inference.cloud.pool import pool
    from routing import balance
    from routing.backends import get_engine

    from . import dashboard
    from .keys import budgets, ratelimit
    from .usage import writer as request_log

    async def step(name: str, work: Any) -> Any:
        try:
            return await work
        except Exception:
            logger.exception("shutdown: %s failed", name)
            return None

    dashboard.stop()
    closed = await step("closing the upstream pools", pool.aclose())
    await step("stopping the engine", asyncio.to_thread(get_engine().close))
    logger.info("shutdown: closed %s upstream connection pool(s), engine stopped", closed)
    await step("writing the rate-limit charges", ratelimit.aclose())
    await step("writing the budget charges", budgets.aclose())
    # Other processes stop counting this one's requests in flight at once.
    await step("withdrawing the in-flight counts", asyncio.to_thread(balance.reset))
    waiting = await step("writing the request log", asyncio.to_thread(request_log.stop))
    logger.info("shutdown: request log written (%s rows were waiting)", waiting)


def _register_shutdown() -> None:
    # Under daphne the Twisted reactor owns the loop: run before it stops.
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    def before_shutdown() -> defer.Deferred[None]:
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
