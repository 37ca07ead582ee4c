"""One record per API request, from the first byte to the last.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.http import HttpRequest

from inference.errors import GatewayError
from inference.types import Event, Finish, PromptUsage, is_content

from . import auth, scrub
from .errors import Protocol

logger = logging.getLogger(__name__)

# Listeners run on the event loop when a request ends: they must be quick
# (count, enqueue, schedule), never wait on I/O.
Listener = Callable[["RequestContext"], None]
_listeners: list[Listener] = []


@dataclass
class RequestContext:
    protocol: Protocol
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    api_key: Any = None  # set by gateway.auth once the caller is known
    requested_model: str = ""
    stream: bool = False
    served: Any = None  # routing.failover.Served
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    cost: Decimal | None = None  # USD, once computed (gateway.costs)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from a prompt cache
    first_token_at: float | None = None
    finished: bool = False
    ended: float | None = None  # when finish() was called
    # Set when a graceful shutdown cuts the request short (gateway.edge.drain).
    interrupted: GatewayError | None = None
    # Content events seen: the output tokens of a stream cut before its usage
    # came (each upstream delta, and each local one, is about one token).
    content_events: int = 0

    def observe(self, event: Event) -> None:
        if is_content(event):
            self.content_events += 1
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
        elif isinstance(event, Finish):
            self.input_tokens = event.usage.input_tokens
            self.output_tokens = event.usage.output_tokens
            self.cached_tokens = event.usage.cached_tokens
        elif isinstance(event, PromptUsage):
            self.input_tokens = event.input_tokens

    def fail(self, error: GatewayError, status: int) -> None:
        self.status = status
        self.error_type = error.code or error.kind
        self.error_message = scrub.secrets(error.message)  # shown in the admin
        self.served = error.served or self.served

    @property
    def latency_ms(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return (end - self.started) * 1000

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000


def on_finish(listener: Listener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


async def begin(request: HttpRequest, protocol: Protocol, endpoint: str) -> RequestContext:
    ctx = RequestContext(protocol=protocol, endpoint=endpoint)
    request.gateway_context = ctx  # type: ignore[attr-defined]
    await auth.authenticate(request, ctx)
    return ctx


async def admit(ctx: RequestContext, model: str, *, stream: bool, count: bool = True) -> None:
    ctx.requested_model, ctx.stream = model, stream
    await auth.admit(ctx, model, count=count)


def current(request: HttpRequest) -> RequestContext | None:
    return getattr(request, "gateway_context", None)


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
