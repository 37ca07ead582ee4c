"""The one place where a request walks its chain: retries, breakers, failover.

For each target in order: skip it if a breaker on its way is open; otherwise
try it. What happens after a failure is not decided here but by the policy
table (`routing.policy`): retry the same target (backoff, Retry-After), move
to the next target, or stop. This module carries the decisions out and keeps
the books (`Served`). A stream counts as answered at its first content; a
failure after it is handed to `routing.continuation`, which may let another
target finish the answer (and so opens streams: `continuation.stream`, built on
this module's walk).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from django.conf import settings

from inference.base import Backend, prime
from inference.cloud.config import RetryPolicy
from inference.cloud.errors import UpstreamError
from inference.errors import BackendUnavailable, EngineError, GatewayError, ModelNotFound
from inference.estimate import estimate_tokens
from inference.types import ChatRequest, ChatResult, Event, EventStream

from . import selectors
from .backends import backend_for, breaker_name, config_for, first_token_timeout, gate_for
from .balance import balancer
from .breakers import Gate
from .models import CredentialError
from .policy import Action, Count, Decision, Failure, classify, decide
from .resolution import Hop, Route
from .selectors import Snapshot
from .served import Attempt, Served

__all__ = ["Attempt", "Served", "complete", "count_tokens", "route_for"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Call = Callable[[Backend, Hop, "Walk"], Awaitable[T]]


async def route_for(model: str) -> tuple[Route, Snapshot]:
    snapshot = await selectors.asnapshot()
    route = snapshot.table.resolve(model)
    if route is None:
        raise ModelNotFound(f"The model {model!r} does not exist or is not enabled.", param="model")
    return route, snapshot


_SPENT = "the request's time budget is spent"


class _Unanswered:
    """A target that gave no answer (a sentinel: an answer may be any value)."""


_UNANSWERED = _Unanswered()


async def within(seconds: float, work: Awaitable[T], backend: str, detail: str, why: str) -> T:
    """Await `work` for at most `seconds` (a spent budget still gets a moment, so
    the attempt fails as a timeout rather than not at all): a timeout of
    `backend`, of kind `why` (see UpstreamError.failure)."""
    try:
        async with asyncio.timeout(max(0.001, seconds)):
            return await work
    except TimeoutError:
        raise UpstreamError(
            f"backend {backend!r} timed out: {detail}",
            category="transient", backend=backend, status=504, code="upstream_timeout",
            failure=why,
        ) from None  # fmt: skip


async def complete(request: ChatRequest) -> tuple[ChatResult, Served]:
    async def call(backend: Backend, hop: Hop, walk: Walk) -> ChatResult:
        work = backend.complete(replace(request, model=hop.model))
        if hop.target.kind != "local":  # cloud clients keep to the deadline themselves
            return await work
        return await within(walk.left(), work, backend.name, _SPENT, "budget")

    walk = await Walk.start(request.model)
    result = await walk.run(call)
    await walk.settle(True)
    return result, walk.served


async def open_stream(
    request: ChatRequest, backend: Backend, hop: Hop, walk: Walk
) -> tuple[list[Event], EventStream]:
    """A target's stream, read up to its first content under the first-token timeout."""
    events = backend.stream(replace(request, model=hop.model, stream=True))
    limit = first_token_timeout(hop, walk.snapshot)
    seconds = min(limit, walk.left())
    why = "first_token_timeout" if limit < walk.left() else "budget"
    detail = f"no first token within {limit:g}s" if why != "budget" else _SPENT
    held = await within(seconds, prime(events), backend.name, detail, why)
    return held, events


async def count_tokens(request: ChatRequest) -> tuple[int, str, Served]:
    """The prompt's input tokens, by the first target that answers, and how they
    were counted: "exact" (the target's own count) or "estimate"."""

    async def call(backend: Backend, hop: Hop, walk: Walk) -> tuple[int, str]:
        if not backend.capabilities.count_tokens:  # OpenAI-compatible APIs have none
            return estimate_tokens(request), "estimate"
        work = backend.count_tokens(replace(request, model=hop.model))
        return await within(walk.left(), work, backend.name, _SPENT, "budget"), "exact"

    walk = await Walk.start(request.model)
    walk.timed = False  # a count says nothing about a target's time to first token
    try:
        count, how = await walk.run(call)
    except GatewayError as exc:
        if exc.served is None or classify(exc) in (Failure.CLIENT_ERROR, Failure.CONTENT_POLICY):
            raise  # no route, or the request itself is wrong
        # Every target failed to count: an estimate still answers the question.
        logger.warning("count_tokens for %s: every target failed, estimating", request.model)
        return estimate_tokens(request), "estimate", walk.served
    # An estimate made here asked the backend nothing: no verdict on its health.
    await walk.settle(True if how == "exact" else None)
    return count, how, walk.served


LOCAL_RETRY = RetryPolicy(max_retries=0)  # a local failure is not helped by asking again


class Walk:
    """One request's way down its chain: where it is, what it has tried, and the
    breakers of the target now serving it (settled when its answer ends).

    `order` is the chain as this request walks it: a load-balanced group's
    members in the order its strategy chose (routing.balance). The serving
    target counts as in flight (for least-in-flight) until it is settled."""

    def __init__(self, route: Route, snapshot: Snapshot) -> None:
        self.route, self.snapshot = route, snapshot
        self.served = Served(mapping=route.mapping.pattern if route.mapping else "")
        self.deadline = time.monotonic() + _budget(route, snapshot)
        self.order = balancer().order(route)
        self.position = -1  # index in the chain of the target now serving
        self.gate: Gate | None = None  # its breakers, until settled
        self.busy: str | None = None  # its deployment, in flight until settled
        self.timed = True  # an answer: its time feeds the latency strategy

    @classmethod
    async def start(cls, model: str) -> Walk:
        return cls(*await route_for(model))

    def after_serving(self) -> list[tuple[int, Hop]]:
        """The targets after the one now serving, in this walk's order: the rest
        of its group first, then the chain's next positions."""
        indices = [index for index, _ in self.order]
        at = indices.index(self.position) if self.position in indices else -1
        return self.order[at + 1 :]

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def settle(self, ok: bool | None, *, provider_too: bool = False) -> None:
        """The serving target's outcome, told to its breakers once."""
        gate, self.gate = self.gate, None
        busy, self.busy = self.busy, None
        if busy is not None:
            balancer().inflight.end(busy)
        if gate is not None:
            await gate.record(ok, provider_too=provider_too)

    async def run(
        self,
        call: Call[T],
        hops: Sequence[tuple[int, Hop]] | None = None,
        *,
        prefill: bool = False,
    ) -> T:
        """Down `hops` (default: the whole chain) until a target answers; raises the
        most meaningful failure when none does. `prefill`: a continuation, whose
        failures are only logged (the caller reports the original failure)."""
        errors: list[GatewayError] = []
        for index, hop in hops if hops is not None else self.order:
            try:
                backend = backend_for(hop, self.snapshot, self.deadline)
            except CredentialError as exc:
                logger.error("route %s: %s", self.route.requested, exc.message)
                self._note(hop, "credential_error", 0.0)
                errors.append(exc)
                continue
            result = await self._target(index, hop, backend, call, errors, prefill)
            if not isinstance(result, _Unanswered):
                return result
            if self.left() <= 0:
                break
        raise _final_error(self.route.requested, errors, self.served)

    async def _target(
        self,
        index: int,
        hop: Hop,
        backend: Backend,
        call: Call[T],
        errors: list[GatewayError],
        prefill: bool,
    ) -> T | _Unanswered:
        """Every attempt at one target the policy allows: its answer, or `_UNANSWERED`."""
        gate = gate_for(hop, self.snapshot)
        retry = (
            LOCAL_RETRY
            if hop.target.kind == "local"
            else config_for(self.snapshot, hop.target.name).retry
        )
        attempt = 0
        while True:
            # Asked before each retry too: a breaker that opened on the last
            # failure (or a half-open one whose probe failed) stops the retries.
            if not await gate.admit(hold=self.left()):
                self._note(hop, "skipped (breaker open)", 0.0)
                errors.append(
                    BackendUnavailable(f"backend {gate.deployment!r} is unavailable (circuit open)")
                )
                return _UNANSWERED
            started = time.monotonic()
            inflight = balancer().inflight
            inflight.begin(deployment := breaker_name(hop))
            try:
                result = await call(backend, hop, self)
            except asyncio.CancelledError:
                inflight.end(deployment)
                # The client went away: no verdict, and a probe hands its token back.
                await asyncio.shield(gate.record(None))
                raise
            except Exception as exc:
                inflight.end(deployment)
                error = as_gateway_error(exc, backend.name, self.route.requested)
                elapsed = (time.monotonic() - started) * 1000
                delay = await self._failed(hop, gate, error, attempt, retry, prefill, elapsed)
                if delay is None:
                    errors.append(error)
                    return _UNANSWERED
                if delay < 0:  # never the final error: a prefill refusal
                    return _UNANSWERED
                errors.append(error)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            elapsed = time.monotonic() - started
            if self.timed:  # to the first token, or to the whole answer (non-streamed)
                balancer().latency.record(deployment, elapsed)
            self._note(hop, "continued" if prefill else "ok", elapsed * 1000)
            self.position, self.gate, self.busy = index, gate, deployment
            if not prefill:
                self.served.backend, self.served.model = backend.name, hop.model
            if len(self.served.attempts) > 1:
                logger.info(
                    "route %s served by %s after %s",
                    self.route.requested,
                    backend.name,
                    self.served.trail,
                )
            return result

    async def _failed(
        self,
        hop: Hop,
        gate: Gate,
        error: GatewayError,
        attempt: int,
        retry: RetryPolicy,
        prefill: bool,
        elapsed_ms: float,
    ) -> float | None:
        """Carry out the policy's decision on a failed attempt: the delay before
        retrying the same target, None to move on, -1 to move on without the
        failure counting as the walk's error; raises it when the walk stops."""
        failure = classify(error, prefill=prefill)
        decision = decide(failure, attempt, retry, error.retry_after)
        self._note(hop, outcome_of(error, failure), elapsed_ms)
        await gate.record(verdict(decision), provider_too=decision.count is Count.PROVIDER)
        if failure is Failure.PREFILL_REJECTED:
            remember_no_prefill(gate.deployment)
            logger.info(
                "%s rejects assistant prefill: not asked to continue again", gate.deployment
            )
            return -1.0
        if failure is Failure.BUDGET_SPENT:
            self.deadline = time.monotonic()  # ends the walk, with the error of the chain
            return None
        if decision.action is Action.STOP:
            error.served = self.served
            raise error
        log = logger.error if failure is Failure.CONFIG else logger.warning
        log("route %s: %s (attempt %d)", self.route.requested, error.message, attempt + 1)
        delay = jittered(decision)
        if decision.action is not Action.RETRY or time.monotonic() + delay >= self.deadline:
            return None
        return delay

    def _note(self, hop: Hop, outcome: str, elapsed_ms: float) -> None:
        name = f"local:{hop.target.name}" if hop.target.kind == "local" else hop.target.name
        self.served.attempts.append(Attempt(name, hop.model, outcome, elapsed_ms))


def jittered(decision: Decision) -> float:
    """The wait before a retry: a Retry-After as asked, a backoff spread over its
    upper half (retries from many clients must not arrive together)."""
    return decision.delay if decision.exact else decision.delay * random.uniform(0.5, 1.0)


def verdict(decision: Decision) -> bool | None:
    """A breaker's verdict: unwell (False) or none (None); success is recorded elsewhere."""
    return None if decision.count is Count.NONE else False


def as_gateway_error(exc: Exception, backend: str, model: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    # A bug in a client or translator: logged loudly, and the request still
    # gets its fallbacks.
    logger.error("route %s: backend %s failed unexpectedly", model, backend, exc_info=exc)
    return EngineError(f"backend {backend!r} failed: {type(exc).__name__}")


def outcome_of(error: GatewayError, failure: Failure) -> str:
    if failure is Failure.BUDGET_SPENT:
        return "budget_exhausted"
    if failure is Failure.PREFILL_REJECTED:
        return "prefill_rejected"
    if isinstance(error, UpstreamError) and error.upstream_status:
        return str(error.upstream_status)
    return error.code or error.kind


# Deployments that refused an assistant prefill (a 400 naming it), per process:
# not asked to continue a stream again for an hour, when a model upgrade may
# have changed its mind. Deployment name -> when it may be asked again.
NO_PREFILL_SECONDS = 3600.0
_no_prefill: dict[str, float] = {}


def remember_no_prefill(deployment: str) -> None:
    if len(_no_prefill) > 1024:
        _no_prefill.clear()
    _no_prefill[deployment] = time.monotonic() + NO_PREFILL_SECONDS


def refuses_prefill(deployment: str) -> bool:
    until = _no_prefill.get(deployment)
    return until is not None and time.monotonic() < until


def _budget(route: Route, snapshot: Snapshot) -> float:
    primary = route.chain[0].target
    if primary.kind == "provider":
        return snapshot.providers[primary.name].total_timeout
    return settings.GATEWAY_REQUEST_TIMEOUT


def _final_error(model: str, errors: list[GatewayError], served: Served) -> GatewayError:
    """The most meaningful failure: a real upstream answer beats a timeout,
    which beats a connection error, which beats an open breaker."""

    def rank(error: GatewayError) -> int:
        if isinstance(error, UpstreamError) and error.upstream_status:
            return 0 if error.upstream_status == 429 else 1
        if isinstance(error, CredentialError):
            return 2
        if error.code == "upstream_timeout":
            return 3
        if isinstance(error, BackendUnavailable):
            return 5
        return 4

    if not errors:
        error: GatewayError = BackendUnavailable(f"no backend could serve {model!r}")
    else:
        error = min(errors, key=rank)  # min is stable: the earliest hop wins ties
        trail = "; ".join(f"{a.backend}: {a.outcome}" for a in served.attempts)
        error.message = f"{error.message} (all targets for {model!r} failed: {trail})"
        error.args = (error.message,)
    error.served = served
    return error
