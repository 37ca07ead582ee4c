"""The failover policy table (routing.policy), row by row, and how failures are classified."""

from __future__ import annotations

import httpx
import pytest

from inference.cloud.config import RetryPolicy
from inference.cloud.errors import UpstreamError, from_response, transport_error
from inference.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
)
from routing.failover import jittered
from routing.models import CredentialError
from routing.policy import TABLE, Action, Count, Decision, Failure, classify, decide

RETRY = RetryPolicy(max_retries=2, backoff=0.5, max_backoff=3.0, retry_after_cap=2.0)

# failure -> (retried while retries are left, what then, whom it counts against)
EXPECTED = {
    Failure.RATE_LIMITED: (True, Action.NEXT, Count.DEPLOYMENT),
    Failure.SERVER_ERROR: (True, Action.NEXT, Count.DEPLOYMENT),
    Failure.CONNECTION: (True, Action.NEXT, Count.PROVIDER),
    Failure.BROKEN_STREAM: (True, Action.NEXT, Count.DEPLOYMENT),
    Failure.CONNECT_TIMEOUT: (False, Action.NEXT, Count.PROVIDER),
    Failure.FIRST_BYTE_TIMEOUT: (False, Action.NEXT, Count.DEPLOYMENT),
    Failure.FIRST_TOKEN_TIMEOUT: (False, Action.NEXT, Count.DEPLOYMENT),
    Failure.CONTEXT_LENGTH: (False, Action.NEXT, Count.NONE),
    Failure.CONTENT_POLICY: (False, Action.STOP, Count.NONE),
    Failure.CLIENT_ERROR: (False, Action.STOP, Count.NONE),
    Failure.CONFIG: (False, Action.NEXT, Count.NONE),
    Failure.PREFILL_REJECTED: (False, Action.NEXT, Count.NONE),
    Failure.MID_STREAM: (False, Action.CONTINUE, Count.DEPLOYMENT),
    Failure.BUDGET_SPENT: (False, Action.STOP, Count.NONE),
}


def test_the_table_covers_every_failure() -> None:
    assert set(TABLE) == set(Failure) == set(EXPECTED)


@pytest.mark.parametrize("failure", list(Failure))
def test_each_row(failure: Failure) -> None:
    retried, then, count = EXPECTED[failure]
    for attempt in range(RETRY.max_retries):
        decision = decide(failure, attempt, RETRY)
        assert decision.action is (Action.RETRY if retried else then), (failure, attempt)
        assert decision.count is count
    last = decide(failure, RETRY.max_retries, RETRY)  # retries spent
    assert last == Decision(then, count)
    assert decide(failure, 0, RetryPolicy(max_retries=0)).action is then  # a local target


def test_backoff_doubles_up_to_its_cap_and_is_jittered() -> None:
    retry = RetryPolicy(max_retries=9, backoff=0.5, max_backoff=3.0)
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0)]:
        decision = decide(Failure.SERVER_ERROR, attempt, retry)
        assert decision.delay == base and not decision.exact
        delays = {jittered(decision) for _ in range(50)}
        assert all(base * 0.5 <= d <= base for d in delays), (attempt, delays)
        assert len(delays) > 40  # spread: retries from many clients do not arrive together


def test_retry_after_is_waited_as_asked_up_to_the_cap() -> None:
    asked = decide(Failure.RATE_LIMITED, 0, RETRY, retry_after=0.3)
    assert asked == Decision(Action.RETRY, Count.DEPLOYMENT, 0.3, exact=True)
    assert jittered(asked) == 0.3
    assert decide(Failure.RATE_LIMITED, 0, RETRY, retry_after=10.0).delay == 2.0  # capped
    assert decide(Failure.RATE_LIMITED, 2, RETRY, retry_after=0.3).action is Action.NEXT


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://x"))


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (from_response("p", _response(429), "slow down"), Failure.RATE_LIMITED),
        (from_response("p", _response(503), "down"), Failure.SERVER_ERROR),
        (from_response("p", _response(500), "boom"), Failure.SERVER_ERROR),
        (from_response("p", _response(401), "bad key"), Failure.CONFIG),
        (from_response("p", _response(404), "no model"), Failure.CONFIG),
        (from_response("p", _response(400), "max_tokens: required"), Failure.CLIENT_ERROR),
        (from_response("p", _response(422), "bad"), Failure.CLIENT_ERROR),
        (from_response("p", _response(413), "too big"), Failure.CLIENT_ERROR),
        (
            from_response("p", _response(400), "maximum context length is 8192"),
            Failure.CONTEXT_LENGTH,
        ),
        (from_response("p", _response(400), "prompt is too long: 9 > 8"), Failure.CONTEXT_LENGTH),
        (
            from_response("p", _response(400), "flagged", "content_policy_violation"),
            Failure.CONTENT_POLICY,
        ),
        (
            from_response("p", _response(400), "Your request was rejected by our safety system"),
            Failure.CONTENT_POLICY,
        ),
        (transport_error("p", httpx.ConnectError("refused"), "connection"), Failure.CONNECTION),
        (transport_error("p", httpx.ConnectTimeout("slow"), "connection"), Failure.CONNECT_TIMEOUT),
        (transport_error("p", TimeoutError(), "first_byte_timeout"), Failure.FIRST_BYTE_TIMEOUT),
        (transport_error("p", TimeoutError(), "first_token_timeout"), Failure.FIRST_TOKEN_TIMEOUT),
        (transport_error("p", TimeoutError(), "budget"), Failure.BUDGET_SPENT),
        (transport_error("p", httpx.ReadError("reset")), Failure.BROKEN_STREAM),
        (UpstreamError("garbage", category="transient"), Failure.BROKEN_STREAM),
        (EngineError("oom"), Failure.SERVER_ERROR),
        (BackendUnavailable("busy"), Failure.SERVER_ERROR),
        (ContextLengthExceeded("too long for the local model"), Failure.CONTEXT_LENGTH),
        (InvalidRequest("bad"), Failure.CLIENT_ERROR),
        (CredentialError("no key"), Failure.CONFIG),
    ],
)
def test_classify(error: Exception, failure: Failure) -> None:
    assert classify(error) is failure  # type: ignore[arg-type]


def test_a_failure_after_content_is_continued_unless_it_is_the_callers() -> None:
    cut = transport_error("p", httpx.ReadError("reset"))
    assert classify(cut, content_sent=True) is Failure.MID_STREAM
    stall = transport_error("p", TimeoutError(), "idle_timeout")
    assert classify(stall, content_sent=True) is Failure.MID_STREAM
    refused = UpstreamError("bad", category="client", upstream_status=400)
    assert classify(refused, content_sent=True) is Failure.CLIENT_ERROR
    spent = transport_error("p", TimeoutError(), "budget")
    assert classify(spent, content_sent=True) is Failure.BUDGET_SPENT


def test_a_prefill_refusal_is_recognised_only_for_a_continuation() -> None:
    message = "This model does not support assistant message prefill."
    refusal = from_response("p", _response(400), message)
    assert classify(refusal, prefill=True) is Failure.PREFILL_REJECTED
    assert classify(refusal) is Failure.CLIENT_ERROR
    local = InvalidRequest("the chat template rejected the final assistant message")
    assert classify(local, prefill=True) is Failure.PREFILL_REJECTED


def test_upstream_error_codes_pass_through() -> None:
    error = from_response("p", _response(400), "flagged", "content_policy_violation")
    assert error.code == "content_policy_violation"
    assert "content_policy_violation" in error.message  # Anthropic callers read the message
    server = from_response("p", _response(503), "busy", "engine_overloaded")
    assert server.code == "engine_overloaded" and server.status == 503


def test_accounting_counts_every_change_of_target() -> None:
    from routing.served import Attempt, Served

    served = Served(attempts=[
        Attempt("p", "a", "503", 1), Attempt("p", "a", "503", 1),  # retries: one target
        Attempt("p", "b", "upstream_unreachable after 3 chunks", 1),  # another model
        Attempt("local:demo", "demo", "continued", 1),  # a continuation
    ])  # fmt: skip
    assert served.fallbacks == 2
    assert served.parts == ["p/b", "local:demo/demo"]
    assert served.headers()["X-Gateway-Fallbacks"] == "2"
