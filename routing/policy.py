"""The failover policy: for each kind of failure, what the chain walk does next.

A pure function of (failure kind, attempt number, the target's retry settings):
no I/O, no clock, no randomness, so the whole table is unit-tested
(tests/test_policy.py). `routing.failover` classifies a failure (`classify`),
asks `decide`, and carries the decision out.

Breaker verdicts belong to a *deployment* (provider + upstream model, or one
local model); a connection-level failure also counts against the provider as a
whole, since no model of it can be reached either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from inference.cloud.config import RetryPolicy
from inference.cloud.errors import UpstreamError
from inference.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    EngineError,
    GatewayError,
    InvalidRequest,
)


class Failure(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx, 408/409, a local engine failure
    CONNECTION = "connection"  # refused, DNS, TLS, reset or closed before any byte
    BROKEN_STREAM = "broken_stream"  # cut, reset, error event or garbage before content
    CONNECT_TIMEOUT = "connect_timeout"
    FIRST_BYTE_TIMEOUT = "first_byte_timeout"  # no response head in time
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # head came, the first content did not
    CONTEXT_LENGTH = "context_length"  # the prompt is over this target's context
    CONTENT_POLICY = "content_policy"  # the upstream refuses the content itself
    CLIENT_ERROR = "client_error"  # other 400/413/422: the request is wrong anywhere
    CONFIG = "config"  # 401/403/404, an unusable key: the gateway is misconfigured
    PREFILL_REJECTED = "prefill_rejected"  # a continuation's assistant prefill refused
    MID_STREAM = "mid_stream"  # cut, stall, reset or error event after content
    BUDGET_SPENT = "budget_spent"  # the request's total time budget ran out


class Action(Enum):
    RETRY = "retry"  # the same target again, after `delay`
    NEXT = "next"  # the next target of the chain, at once
    CONTINUE = "continue"  # the next target that can continue the partial answer
    STOP = "stop"  # end the walk and return this failure


class Count(Enum):
    """Whom the failure counts against in the circuit breakers."""

    NONE = "none"  # says nothing bad about the backend
    DEPLOYMENT = "deployment"  # this provider + model (or this local model)
    PROVIDER = "provider"  # the deployment and its whole provider (connection-level)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    count: Count
    delay: float = 0.0  # before a retry; the loop spreads it with jitter unless `exact`
    exact: bool = False  # a Retry-After the upstream asked for: no jitter


@dataclass(frozen=True, slots=True)
class Rule:
    retry: bool  # retried on the same target while retries are left
    exhausted: Action  # then (or at once when not retried)
    count: Count


# The table. README.md ("Failover") shows it to users; keep the two in step.
TABLE: dict[Failure, Rule] = {
    Failure.RATE_LIMITED: Rule(True, Action.NEXT, Count.DEPLOYMENT),
    Failure.SERVER_ERROR: Rule(True, Action.NEXT, Count.DEPLOYMENT),
    Failure.CONNECTION: Rule(True, Action.NEXT, Count.PROVIDER),
    Failure.BROKEN_STREAM: Rule(True, Action.NEXT, Count.DEPLOYMENT),
    # A silent route stays silent: asking it again only spends the budget.
    Failure.CONNECT_TIMEOUT: Rule(False, Action.NEXT, Count.PROVIDER),
    Failure.FIRST_BYTE_TIMEOUT: Rule(False, Action.NEXT, Count.DEPLOYMENT),
    Failure.FIRST_TOKEN_TIMEOUT: Rule(False, Action.NEXT, Count.DEPLOYMENT),
    # Another target may have a larger context; this one never will.
    Failure.CONTEXT_LENGTH: Rule(False, Action.NEXT, Count.NONE),
    Failure.CONTENT_POLICY: Rule(False, Action.STOP, Count.NONE),
    Failure.CLIENT_ERROR: Rule(False, Action.STOP, Count.NONE),
    Failure.CONFIG: Rule(False, Action.NEXT, Count.NONE),
    Failure.PREFILL_REJECTED: Rule(False, Action.NEXT, Count.NONE),
    Failure.MID_STREAM: Rule(False, Action.CONTINUE, Count.DEPLOYMENT),
    Failure.BUDGET_SPENT: Rule(False, Action.STOP, Count.NONE),
}


def decide(
    failure: Failure, attempt: int, retry: RetryPolicy, retry_after: float | None = None
) -> Decision:
    """What to do after `attempt` (0-based) on one target failed with `failure`.

    A retry waits Retry-After (capped at the provider's cap) when the upstream
    gave one, else exponential backoff (capped); the loop adds jitter to the
    latter so many clients' retries spread out.
    """
    rule = TABLE[failure]
    if rule.retry and attempt < retry.max_retries:
        if retry_after is not None:
            return Decision(Action.RETRY, rule.count, min(retry_after, retry.retry_after_cap), True)
        delay = min(retry.max_backoff, retry.backoff * (2**attempt))
        return Decision(Action.RETRY, rule.count, delay)
    return Decision(rule.exhausted, rule.count)


# Upstream codes of a refusal of the content itself (OpenAI's, Azure's...);
# inference.cloud.errors gives other wordings of it OpenAI's code.
_POLICY_CODES = {"content_policy_violation", "content_filter", "moderation_blocked"}
# How upstreams word a refused assistant prefill (Anthropic's newer models,
# OpenAI-compatible servers without continue_final_message).
_PREFILL_PHRASES = ("prefill", "final assistant", "last message", "assistant message")


def classify(error: GatewayError, *, content_sent: bool = False, prefill: bool = False) -> Failure:
    """The kind of a failure, local or cloud. `content_sent`: the client already
    has part of the answer; `prefill`: the request carried an assistant prefill."""
    if isinstance(error, UpstreamError) and error.failure == "budget":
        return Failure.BUDGET_SPENT
    if content_sent:
        client = isinstance(error, UpstreamError) and error.category == "client"
        return Failure.CLIENT_ERROR if client else Failure.MID_STREAM
    code = (error.code or "").lower()
    message = error.message.lower()
    if code == "context_length_exceeded" or isinstance(error, ContextLengthExceeded):
        return Failure.CONTEXT_LENGTH
    if isinstance(error, UpstreamError):
        return _classify_upstream(error, code, message, prefill)
    if isinstance(error, EngineError | BackendUnavailable):
        return Failure.SERVER_ERROR  # load error, OOM, busy: like a 5xx
    if error.code == "credential_error":
        return Failure.CONFIG
    if isinstance(error, InvalidRequest) or error.status < 500:
        if prefill and any(p in message for p in _PREFILL_PHRASES):
            return Failure.PREFILL_REJECTED
        return Failure.CLIENT_ERROR
    return Failure.SERVER_ERROR


def _classify_upstream(error: UpstreamError, code: str, message: str, prefill: bool) -> Failure:
    if error.failure in _TRANSPORT:
        return _TRANSPORT[error.failure]
    status = error.upstream_status
    if error.category == "config":
        return Failure.CONFIG
    if status == 429:
        return Failure.RATE_LIMITED
    if error.category == "client":
        if code in _POLICY_CODES:
            return Failure.CONTENT_POLICY
        if prefill and status == 400 and any(p in message for p in _PREFILL_PHRASES):
            return Failure.PREFILL_REJECTED
        return Failure.CLIENT_ERROR
    if status is not None:
        return Failure.SERVER_ERROR
    return Failure.BROKEN_STREAM


_TRANSPORT = {
    "connect_timeout": Failure.CONNECT_TIMEOUT,
    "first_byte_timeout": Failure.FIRST_BYTE_TIMEOUT,
    "first_token_timeout": Failure.FIRST_TOKEN_TIMEOUT,
    "connection": Failure.CONNECTION,
}
