"""Graceful shutdown: on SIGTERM (or Ctrl-C) the process drains before it stops.

1. New connections, and new requests on open ones, get a 503 `shutting_down`
   (the load balancer or client retries elsewhere); nothing new starts.
2. Requests in flight, streams included, may finish for up to
   GATEWAY_SHUTDOWN_GRACE_SECONDS (30).
3. What is still running then is interrupted: a stream ends with an in-band
   error event in its client's protocol (OpenAI `data: {"error": ...}`,
   Anthropic `event: error`) and its chunked terminator, never a bare close; a
   request whose answer had not started gets a 503 in its envelope. Their
   request-log rows say 503 `shutting_down`, with the tokens counted so far.
4. Then the reactor stops, and `gateway.startup.shutdown` writes the request
   log (every row above included), closes the pools and stops the engine.

A second SIGTERM stops at once. State is per process: the flights registered
by `gateway.handlers.ApiApplication`, and the guard that refuses new work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from inference.errors import GatewayError

from .. import context

logger = logging.getLogger(__name__)

# Requests being answered: the view task, and its request (for its record).
flights: dict[asyncio.Task[Any], HttpRequest] = {}
_landed = asyncio.Event()
_state: dict[str, Any] = {"guard": None, "draining": False}


def shutting_down() -> GatewayError:
    error = GatewayError("the gateway is shutting down; retry the request", status=503)
    error.kind, error.code = "overloaded", "shutting_down"
    return error


def draining() -> bool:
    return bool(_state["draining"])


def take_off(task: asyncio.Task[Any], request: HttpRequest) -> None:
    flights[task] = request


def land(task: asyncio.Task[Any]) -> None:
    flights.pop(task, None)
    if not flights:
        _landed.set()


def install(guard: Any) -> None:
    """Called by gateway.edge.server once daphne's factory is wrapped."""
    from twisted.internet import reactor

    _state["guard"] = guard
    # After the reactor has put in its own handlers, which would stop at once.
    reactor.callWhenRunning(_take_signals)


def _take_signals() -> None:
    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorThreads

    # Twisted types `reactor` as its common interfaces; threads are adapted to,
    # as its documentation says (the running reactor itself comes back).
    threads = IReactorThreads(reactor)

    def on_signal(signum: int, frame: Any) -> None:
        if _state["draining"]:
            logger.warning("second signal: stopping now")
            threads.callFromThread(stop_reactor)
            return
        threads.callFromThread(lambda: asyncio.ensure_future(drain()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


async def drain(grace: float | None = None) -> None:
    grace = settings.GATEWAY_SHUTDOWN_GRACE_SECONDS if grace is None else grace
    _state["draining"] = True
    if _state["guard"] is not None:
        _state["guard"].draining = True
    logger.info("shutting down: %d request(s) in flight, %.0f s to finish", len(flights), grace)
    await _wait_landed(grace)
    if flights:
        logger.warning("shutting down: interrupting %d request(s) still running", len(flights))
        interrupt_all()
        await _wait_landed(10.0)  # they end at their next await; a stuck one is not waited for
    # The finished requests' listeners run two loop turns after finish().
    for _ in range(3):
        await asyncio.sleep(0)
    stop_reactor()


def stop_reactor() -> None:
    """Stop the reactor unless it is stopping already: a second signal and the
    drain's own end both come here, in either order (a second stop() would
    raise ReactorNotRunning)."""
    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning

    if reactor.running:
        with contextlib.suppress(ReactorNotRunning):  # running, but stop() was called
            reactor.stop()


async def _wait_landed(seconds: float) -> None:
    if not flights:
        return
    _landed.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_landed.wait(), seconds)


def interrupt_all() -> None:
    for task, request in list(flights.items()):
        ctx = context.current(request)
        if ctx is not None:
            ctx.interrupted = shutting_down()
        task.cancel()
