"""The life of one API request's record (gateway.record.RequestContext), first byte to last.

Views open it (`begin`: who is calling), fill it (`admit`: what they asked for;
`observe`: what came back) and close it (`finish`), exactly once per request,
whether it succeeded, fell back or failed, streamed or not. Whatever wants to
know about finished requests (request log, usage limits, metrics, the live
dashboard) registers a listener instead of reaching into the views.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

from django.http import HttpRequest

from .errors import Protocol
from .keys import auth
from .record import RequestContext

__all__ = ["RequestContext", "admit", "begin", "current", "finish", "on_finish"]

logger = logging.getLogger(__name__)

# Listeners run on the event loop when a request ends: they must be quick
# (count, enqueue, schedule), never wait on I/O.
Listener = Callable[["RequestContext"], None]
_listeners: list[Listener] = []

# Each request's record, for the code that holds only the request (the API
# application's clean-up, middleware): per request, gone with it.
_records: weakref.WeakKeyDictionary[HttpRequest, RequestContext] = weakref.WeakKeyDictionary()


def on_finish(listener: Listener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


async def begin(request: HttpRequest, protocol: Protocol, endpoint: str) -> RequestContext:
    ctx = RequestContext(protocol=protocol, endpoint=endpoint)
    _records[request] = ctx
    await auth.authenticate(request, ctx)
    return ctx


async def admit(ctx: RequestContext, model: str, *, stream: bool, count: bool = True) -> None:
    ctx.requested_model, ctx.stream = model, stream
    await auth.admit(ctx, model, count=count)


def current(request: HttpRequest) -> RequestContext | None:
    return _records.get(request)


def finish(ctx: RequestContext) -> None:
    """Close the record. On the event loop its listeners run two turns later:
    after the server has written what the request's last send handed it (the
    socket's writer runs in the turn after the one it was asked for), so the
    bookkeeping never delays the answer's last bytes."""
    if ctx.finished:
        return
    ctx.finished = True
    ctx.ended = time.monotonic()  # the listeners, later, all see the same latency
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a script, a command): now
        _notify(ctx)
        return
    loop.call_soon(loop.call_soon, _notify, ctx)


def _notify(ctx: RequestContext) -> None:
    for listener in list(_listeners):
        try:
            listener(ctx)
        except Exception:  # bookkeeping must never break an answer
            logger.exception("request listener %r failed", listener)
