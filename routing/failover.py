"""The one place where a request walks its chain: retries, breakers, failover.

For each target in order: skip it if its breaker is open; otherwise try it,
retrying transient failures with exponential backoff and jitter (Retry-After
honoured up to the provider's cap) while the request's budget lasts; a config
failure (bad key, 401/403/404 upstream) moves on at once; a client error (the
request itself is wrong) ends the walk. A stream counts as answered at its
first content: until then a failure can still move on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from django.conf import settings

from inference.base import Backend, prime
from inference.cloud.config import RetryPolicy
from inference.cloud.errors import UpstreamError
from inference.errors import (
    BackendUnavailable,
    EngineError,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
)
from inference.estimate import estimate_tokens
from inference.types import ChatRequest, ChatResult, Event

from . import selectors
from .backends import backend_for, breaker_name, breaker_settings, config_for
from .breakers import BreakerSettings, breakers
from .models import CredentialError
from .resolution import Hop, Route
from .selectors import Snapshot

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    backend: str
    model: str
    outcome: str  # "ok", "skipped (breaker open)" or the error code / HTTP status
    elapsed_ms: float


@dataclass(slots=True)
class Served:
    """Who answered, and what it took."""

    backend: str = ""
    model: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def fallbacks(self) -> int:
        backends = [a.backend for a in self.attempts]
        return len(dict.fromkeys(backends)) - 1 if backends else 0

    @property
    def trail(self) -> str:
        """Each try and its outcome, as X-Gateway-Attempts and the request log show it."""
        return ", ".join(f"{a.backend}/{a.model}={a.outcome}" for a in self.attempts)

    def headers(self) -> dict[str, str]:
        return {
            "X-Gateway-Backend": self.backend,
            "X-Gateway-Model": self.model,
            "X-Gateway-Attempts": self.trail,
            "X-Gateway-Fallbacks": str(self.fallbacks),
        }


async def route_for(model: str) -> tuple[Route, Snapshot]:
    snapshot = await selectors.asnapshot()
    route = snapshot.table.resolve(model)
    if route is None:
        raise ModelNotFound(f"The model {model!r} does not exist or is not enabled.", param="model")
    return route, snapshot


_SPENT = "the request's time budget is spent"


async def _within(seconds: float, work: Awaitable[T], backend: str, detail: str) -> T:
    """Await `work` for at most `seconds` (a spent budget still gets a moment, so
    the attempt fails as a timeout rather than not at all): a timeout of `backend`."""
    try:
        async with asyncio.timeout(max(0.001, seconds)):
            return await work
    except TimeoutError:
        raise _timeout(backend, detail) from None


async def complete(request: ChatRequest) -> tuple[ChatResult, Served]:
    async def call(backend: Backend, hop: Hop, deadline: float) -> ChatResult:
        work = backend.complete(replace(request, model=hop.model))
        if hop.target.kind != "local":  # cloud clients keep to the deadline themselves
            return await work
        return await _within(deadline - time.monotonic(), work, backend.name, _SPENT)

    result, served, _ = await _walk(request.model, call)
    return result, served


async def stream(request: ChatRequest) -> tuple[list[Event], AsyncIterator[Event], Served]:
    """The first content (held back) and the rest of the stream, once a target answered.

    The backend's breaker hears how the stream ended, not only that it began:
    streams cut or stalled after their first content are failures too.
    """

    async def call(
        backend: Backend, hop: Hop, deadline: float
    ) -> tuple[list[Event], AsyncIterator[Event]]:
        events = backend.stream(replace(request, model=hop.model, stream=True))
        limit = _first_token_timeout(backend, hop)
        seconds = min(limit, deadline - time.monotonic())
        detail = f"no first token within {limit:g}s"
        held = await _within(seconds, prime(events), backend.name, detail)
        return held, events

    (held, events), served, settle = await _walk(request.model, call, settle_later=True)
    return held, Settled(events, served, settle), served


async def count_tokens(request: ChatRequest) -> tuple[int, str, Served]:
    """The prompt's input tokens, by the first target that answers, and how they
    were counted: "exact" (the target's own count) or "estimate"."""

    async def call(backend: Backend, hop: Hop, deadline: float) -> tuple[int, str]:
        counter = getattr(backend, "count_tokens", None)
        if counter is None:  # OpenAI-compatible APIs have no count endpoint
            return estimate_tokens(request), "estimate"
        work = counter(replace(request, model=hop.model))
        return await _within(deadline - time.monotonic(), work, backend.name, _SPENT), "exact"

    try:
        (count, how), served, settle = await _walk(request.model, call, settle_later=True)
    except GatewayError as exc:
        served = getattr(exc, "served", None)
        if served is None or _classify(exc, "").category == "client":
            raise  # no route, or the request itself is wrong
        # Every target failed to count: an estimate still answers the question.
        logger.warning("count_tokens for %s: every target failed, estimating", request.model)
        return estimate_tokens(request), "estimate", served
    # An estimate made here asked the backend nothing: no verdict on its health.
    await settle(True if how == "exact" else None)
    return count, how, served


class Settled:
    """The rest of a stream. However it ends (its end, a failure, the client
    leaving during it or before reading any of it) the backend's breaker hears
    the outcome once, and the upstream stream is closed."""

    def __init__(
        self,
        events: AsyncIterator[Event],
        served: Served,
        settle: Callable[[bool | None], Awaitable[None]],
    ) -> None:
        self._events, self._served, self._settle = events, served, settle
        self._done = False

    def __aiter__(self) -> Settled:
        return self

    async def __anext__(self) -> Event:
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            await self._finish(True)
            raise
        except GatewayError as exc:
            error = _classify(exc, self._served.backend)
            self._served.attempts[-1].outcome = f"{_outcome(error)} after content"
            await self._finish(False if error.unhealthy else None)
            raise
        except Exception:
            self._served.attempts[-1].outcome = "failed after content"
            await self._finish(False)
            raise

    async def aclose(self) -> None:
        await self._finish(True)  # a client that leaves after content: the backend answered

    async def _finish(self, ok: bool | None) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            await self._settle(ok)


async def _walk(
    model: str,
    call: Callable[[Backend, Hop, float], Awaitable[T]],
    *,
    settle_later: bool = False,
) -> tuple[T, Served, Callable[[bool | None], Awaitable[None]]]:
    """Down the chain until a target answers. With `settle_later` the answer's
    success is not recorded yet: the returned `settle(ok)` records it."""
    route, snapshot = await route_for(model)
    served = Served()
    deadline = time.monotonic() + _budget(route, snapshot)
    box = breakers()
    errors: list[GatewayError] = []
    for hop in route.chain:
        name, config = breaker_name(hop), breaker_settings(hop, snapshot)
        try:
            backend = backend_for(hop, snapshot, deadline)
        except CredentialError as exc:
            logger.error("route %s: %s", model, exc.message)
            served.attempts.append(Attempt(name, hop.model, "credential_error", 0.0))
            errors.append(exc)
            continue
        policy = _policy(hop, snapshot)
        for attempt in range(policy.max_retries + 1):
            # Asked again before each retry: a breaker that opened on the last
            # failure (or a half-open one whose probe failed) stops the retries.
            admission = await box.admit(name, config, hold=deadline - time.monotonic())
            if admission is None:
                served.attempts.append(Attempt(name, hop.model, "skipped (breaker open)", 0.0))
                errors.append(BackendUnavailable(f"backend {name!r} is unavailable (circuit open)"))
                break
            probe = admission.probe
            started = time.monotonic()
            try:
                result = await call(backend, hop, deadline)
            except asyncio.CancelledError:
                # The client went away: no verdict, and a probe hands its token back.
                await asyncio.shield(box.record(name, config, ok=None, probe=probe))
                raise
            except Exception as exc:
                if not isinstance(exc, GatewayError):
                    # A bug in a client or translator: logged loudly, and the
                    # request still gets its fallbacks.
                    logger.exception("route %s: backend %s failed unexpectedly", model, name)
                    exc = EngineError(f"backend {name!r} failed: {type(exc).__name__}")
                error = _classify(exc, name)
                elapsed = (time.monotonic() - started) * 1000
                spent = error.code == "upstream_timeout" and time.monotonic() >= deadline - 0.01
                outcome = "budget_exhausted" if spent else _outcome(error)
                served.attempts.append(Attempt(name, hop.model, outcome, elapsed))
                # A client's own error says nothing bad about the backend, and
                # neither does an attempt cut short because the budget ran out.
                verdict = None if spent else not error.unhealthy
                await box.record(name, config, ok=verdict, probe=probe)
                if error.category == "client":
                    error.cause.served = served  # type: ignore[attr-defined]
                    raise error.cause from None
                errors.append(error)
                log = logger.error if error.category == "config" else logger.warning
                log("route %s: %s (attempt %d)", model, error.message, attempt + 1)
                delay = _backoff(error, attempt, policy)
                if (
                    not error.retryable
                    or attempt == policy.max_retries
                    or time.monotonic() + delay >= deadline
                ):
                    break
                await asyncio.sleep(delay)
                continue
            served.attempts.append(
                Attempt(name, hop.model, "ok", (time.monotonic() - started) * 1000)
            )
            served.backend, served.model = name, hop.model
            if len(served.attempts) > 1:
                logger.info(
                    "route %s served by %s after %s",
                    model,
                    name,
                    served.trail,
                )

            async def settle(
                ok: bool | None,
                name: str = name,
                config: BreakerSettings = config,
                probe: bool = probe,
            ) -> None:
                await box.record(name, config, ok=ok, probe=probe)

            if not settle_later:
                await settle(True)
            return result, served, settle
        if time.monotonic() >= deadline:
            break
    raise _final_error(model, errors, served)


class _Classified(UpstreamError):
    cause: GatewayError


def _classify(error: GatewayError, backend: str) -> _Classified:
    """Every failure, local or cloud, in the cloud's terms (transient/config/client)."""
    if isinstance(error, UpstreamError):
        category, upstream = error.category, error.upstream_status
    elif isinstance(error, CredentialError):
        category, upstream = "config", None
    elif isinstance(error, EngineError | BackendUnavailable):
        category, upstream = "transient", None  # load error, OOM, busy: like a 5xx
    elif isinstance(error, InvalidRequest) or error.status < 500:
        category, upstream = "client", None
    else:
        category, upstream = "transient", None
    classified = _Classified(
        error.message,
        category=category,  # type: ignore[arg-type]
        backend=backend,
        upstream_status=upstream,
        retry_after=getattr(error, "retry_after", None),
        status=error.status,
        kind=error.kind,
        code=error.code,
    )
    classified.param = error.param
    classified.cause = error
    return classified


def _outcome(error: UpstreamError) -> str:
    return str(error.upstream_status) if error.upstream_status else (error.code or error.kind)


LOCAL_POLICY = RetryPolicy(max_retries=0)  # a local failure is not helped by asking again


def _policy(hop: Hop, snapshot: Snapshot) -> RetryPolicy:
    if hop.target.kind == "local":
        return LOCAL_POLICY
    return config_for(snapshot, hop.target.name).retry


def _backoff(error: UpstreamError, attempt: int, policy: RetryPolicy) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, policy.retry_after_cap)
    base = min(policy.max_backoff, policy.backoff * (2**attempt))
    return base * random.uniform(0.5, 1.0)  # jitter: retries from many clients spread out


def _budget(route: Route, snapshot: Snapshot) -> float:
    primary = route.chain[0].target
    if primary.kind == "provider":
        return snapshot.providers[primary.name].total_timeout
    return settings.GATEWAY_REQUEST_TIMEOUT


def _first_token_timeout(backend: Backend, hop: Hop) -> float:
    config = getattr(backend, "config", None)
    if config is not None:
        return config.timeouts.first_byte
    return settings.GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT


def _timeout(backend: str, detail: str) -> UpstreamError:
    return UpstreamError(
        f"backend {backend!r} timed out: {detail}",
        category="transient", backend=backend, status=504, code="upstream_timeout",
    )  # fmt: skip


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
        return BackendUnavailable(f"no backend could serve {model!r}")
    best = min(errors, key=rank)  # min is stable: the earliest hop wins ties
    trail = "; ".join(f"{a.backend}: {a.outcome}" for a in served.attempts)
    best.message = f"{best.message} (all targets for {model!r} failed: {trail})"
    best.args = (best.message,)
    best.served = served  # type: ignore[attr-defined]
    return best
