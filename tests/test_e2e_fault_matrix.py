"""Every fault of the fake upstream, through a live gateway, with both official SDKs.

For each fault, each upstream protocol (an OpenAI-compatible and an Anthropic
provider) and each client (the `openai` and `anthropic` SDKs, streamed and
not): what the client received, how many attempts the fake upstream saw, how
long it took (as bounds), and that the gateway answers the next request.
Attempts are counted at the upstream, never read from configuration.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from fake_upstream import FakeUpstream
from fake_upstream.replies import content_text, plan_text

from .conftest import LiveServer, routed_gateway
from .fault_clients import CLIENTS, HI, MAX_TOKENS

pytestmark = pytest.mark.e2e

OAI_KEY, ANT_KEY = "sk-matrix-oai", "sk-ant-matrix"
UPSTREAM_KEYS = (OAI_KEY, ANT_KEY)  # the fake upstream takes these (conftest.upstream)
FIRST_BYTE, FIRST_TOKEN, IDLE, CAP = 0.5, 0.8, 0.4, 0.5
PROVIDER = {
    "connect_timeout": 0.5, "first_byte_timeout": FIRST_BYTE, "first_token_timeout": FIRST_TOKEN,
    "stream_idle_timeout": IDLE, "total_timeout": 8.0, "max_retries": 2, "retry_backoff": 0.02,
    "retry_after_cap": CAP, "breaker_fail_max": 10_000, "breaker_reset_timeout": 1.0,
    # The OpenAI-compatible upstream continues a prefill (vLLM's continue_final_message).
    "accepts_prefill": True,
}  # fmt: skip
# The fallback always speaks the other protocol, so failing over also translates.
OTHER = {"oai": ("ant", "claude-fine"), "ant": ("oai", "gpt-fine")}
# The whole answer to HI, as a healthy upstream gives it: a continued stream must read so.
WHOLE = plan_text("hello there", words=16, max_tokens=MAX_TOKENS, stop=[], input_tokens=2).text


@dataclass(frozen=True)
class Expect:
    """What the client sees: served by "primary" or "fallback", an HTTP error
    status, (streams) content then an in-band error, or "continued": the primary's
    content finished by the fallback, in one stream."""

    outcome: str  # "primary", "fallback", "error", "in-band", "continued"
    attempts: int  # requests the faulty model's upstream saw
    status: int | None = None  # for "error": the OpenAI-protocol status
    # A lower bound only (a wait that must have happened): no test here depends
    # on how fast the machine is. What a time limit cut short shows in the
    # outcome instead (the fallback served, one attempt).
    min_s: float = 0.0
    prefix: str = ""  # "continued": the partial answer the fallback got as its prefill


@dataclass(frozen=True)
class Fault:
    model: str
    fallback: bool
    whole: Expect  # non-streaming
    streamed: Expect
    anthropic_status: dict[int, int] = field(default_factory=dict)  # OpenAI status -> Anthropic
    fallback_model: str | None = None  # instead of the other provider's healthy model
    code: str | None = None  # "error": the OpenAI code the client gets


RETRIED = 3  # 1 + max_retries
CUT3 = "echo: hello there"  # the three words sent before a cut, stall or error event
FAULTS = {
    "500-once": Fault("fault-500-once", False, Expect("primary", 2), Expect("primary", 2)),
    "503": Fault("fault-503", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    "503-alone": Fault(
        "fault-503",
        False,
        Expect("error", RETRIED, 503),
        Expect("error", RETRIED, 503),
        anthropic_status={503: 529},
    ),
    "429-retry-after": Fault(
        "fault-429:0.3",
        False,
        Expect("error", RETRIED, 429, 0.58),
        Expect("error", RETRIED, 429, 0.58),
    ),
    "429-retry-after-over-the-cap": Fault(
        "fault-429:5",
        False,
        Expect("error", RETRIED, 429, 2 * CAP - 0.02),
        Expect("error", RETRIED, 429, 2 * CAP - 0.02),
    ),
    "429": Fault("fault-429", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    "reset": Fault("fault-reset", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    "close": Fault("fault-close", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    # A silent route stays silent: one first-byte timeout, then the next target.
    "hang": Fault(
        "fault-hang",
        True,
        Expect("fallback", 1, None, FIRST_BYTE),
        Expect("fallback", 1, None, FIRST_BYTE),
    ),
    "slow-first-token": Fault(
        "fault-slow-first-token:0.2",
        False,
        Expect("primary", 1, None, 0.2),
        Expect("primary", 1, None, 0.2),
    ),
    # Streams: the head comes at once, the first token too late (first-token timeout);
    # a whole answer: nothing at all within the first-byte timeout.
    "slow-first-token-over-the-limit": Fault(
        "fault-slow-first-token:3",
        True,
        Expect("fallback", 1, None, FIRST_BYTE),
        Expect("fallback", 1, None, FIRST_TOKEN),
    ),
    "cut": Fault(
        "fault-cut-after:3",
        True,
        Expect("fallback", RETRIED),
        Expect("continued", 1, prefix=CUT3),
    ),
    "cut-fallback-rejects-prefill": Fault(
        "fault-cut-after:3",
        True,
        Expect("fallback", RETRIED),
        Expect("in-band", 1, prefix=CUT3),
        fallback_model="fault-no-prefill",
    ),
    # A whole answer's body that stops after its head: the stream-idle limit.
    "stall": Fault(
        "fault-stall-after:3",
        True,
        Expect("fallback", 1, None, IDLE),
        Expect("continued", 1, None, IDLE, prefix=CUT3),
    ),
    "malformed-after-content": Fault(
        "fault-malformed:2", True, Expect("fallback", RETRIED), Expect("primary", 1)
    ),
    "malformed-before-content": Fault(
        "fault-malformed:0", True, Expect("fallback", RETRIED), Expect("primary", 1)
    ),
    "no-done": Fault("fault-no-done", False, Expect("primary", 1), Expect("primary", 1)),
    # Another target may have a larger context: asked once, the same one never again.
    "context-length": Fault(
        "fault-context-length", True, Expect("fallback", 1), Expect("fallback", 1)
    ),
    "context-length-alone": Fault(
        "fault-context-length",
        False,
        Expect("error", 1, 400),
        Expect("error", 1, 400),
        code="context_length_exceeded",
    ),
    "content-policy": Fault(
        "fault-content-policy",
        True,
        Expect("error", 1, 400),
        Expect("error", 1, 400),
        code="content_policy_violation",
    ),
    "401": Fault("fault-401", True, Expect("fallback", 1), Expect("fallback", 1)),
    "403": Fault("fault-403", True, Expect("fallback", 1), Expect("fallback", 1)),
    "wrong-key": Fault("gpt-any", True, Expect("fallback", 1), Expect("fallback", 1)),
    "overloaded-in-stream": Fault(
        "fault-stream-overloaded:3",
        True,
        Expect("fallback", RETRIED),
        Expect("continued", 1, prefix=CUT3),
    ),
    "overloaded-before-content": Fault(
        "fault-stream-overloaded", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)
    ),
}


def route_name(fault: str, kind: str) -> str:
    return f"{fault}@{kind}"


def routing_spec(upstream: FakeUpstream) -> dict[str, object]:
    providers = [
        {**PROVIDER, "name": "oai", "kind": "openai", "base_url": f"{upstream.url}/v1",
         "key": OAI_KEY},
        {**PROVIDER, "name": "ant", "kind": "anthropic", "base_url": upstream.url,
         "key": ANT_KEY},
        {**PROVIDER, "name": "oai-wrong-key", "kind": "openai",
         "base_url": f"{upstream.url}/v1", "key": "sk-not-this-one"},
        {**PROVIDER, "name": "ant-wrong-key", "kind": "anthropic", "base_url": upstream.url,
         "key": "sk-ant-not-this-one"},
    ]  # fmt: skip
    mappings = []
    for name, fault in FAULTS.items():
        for kind in ("oai", "ant"):
            provider = f"{kind}-wrong-key" if name == "wrong-key" else kind
            chain = [{"provider": provider, "model": fault.model}]
            if fault.fallback:
                other, model = OTHER[kind]
                chain.append({"provider": other, "model": fault.fallback_model or model})
            mappings.append({"pattern": route_name(name, kind), "chain": chain})
    mappings.append({"pattern": "healthy", "chain": [{"provider": "oai", "model": "gpt-fine"}]})
    for kind in ("oai", "ant"):
        chain = [{"provider": kind, "model": "fault-slow-tokens:0.1"}]
        mappings.append({"pattern": f"slow@{kind}", "chain": chain})
    return {"providers": providers, "mappings": mappings}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    with routed_gateway(tmp_path_factory.mktemp("fault-matrix"), routing_spec(upstream)) as server:
        yield server


# A whole answer ends with a finish reason, whichever protocol was spoken.
FINISHED = {"stop", "length", "end_turn", "max_tokens"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("kind", ["oai", "ant"], ids=["openai-upstream", "anthropic-upstream"])
@pytest.mark.parametrize("name", FAULTS)
def test_fault(
    gateway: LiveServer, upstream: FakeUpstream, name: str, kind: str, client: str, stream: bool
) -> None:
    fault = FAULTS[name]
    expect = fault.streamed if stream else fault.whole
    upstream.reset()
    started = time.monotonic()
    seen = CLIENTS[client](gateway, route_name(name, kind), stream)
    elapsed = time.monotonic() - started

    faulty = [r for r in upstream.find(model=fault.model)]
    assert len(faulty) == expect.attempts, (seen, [r.path for r in faulty])
    other_provider, other_model = OTHER[kind]
    other_model = fault.fallback_model or other_model
    fallback_got = upstream.find(model=other_model)
    if expect.outcome == "error":
        status = expect.status
        if client == "anthropic":
            status = fault.anthropic_status.get(status, status)  # type: ignore[arg-type]
        assert seen.status == status, seen
        assert not fallback_got  # the caller's own error: no fallback
        if fault.code:  # the upstream's own verdict, in the caller's terms
            if client == "openai":
                assert seen.code == fault.code, seen
            else:
                assert seen.code == "invalid_request_error", seen
                if name == "content-policy":  # Anthropic's envelope: the message says it
                    assert "content_policy_violation" in seen.error, seen
        else:
            assert str(status) in seen.error or kind in seen.error, seen  # says what failed
    elif expect.outcome == "in-band":
        assert seen.text == expect.prefix, seen  # content arrived ...
        assert seen.in_band, seen  # ... and then the failure was said, not hidden
        assert seen.backend == kind
        assert f"'{kind}'" in seen.in_band, seen  # the original failure, naming who broke
        assert "prefill" not in seen.in_band, seen  # never the fallback's refusal
        # The fallback was asked to continue once; its refusal is remembered.
        assert len(fallback_got) <= 1
        for sent in fallback_got:
            assert _prefill(sent.json) == expect.prefix
    elif expect.outcome == "continued":
        assert seen.status is None and seen.in_band is None, seen
        assert seen.text == WHOLE, seen  # the complete answer, reading as one
        assert seen.backend == kind, seen  # the headers went out with the primary
        assert len(seen.ids) == 1 and seen.finishes == 1, seen  # one stream
        assert seen.finish in FINISHED, seen
        if seen.output_tokens is not None:  # what each target really generated, summed
            assert seen.output_tokens == MAX_TOKENS, seen
        [sent] = fallback_got  # the fallback got the partial answer as its prefill
        assert _prefill(sent.json) == expect.prefix, sent.json
    else:
        assert seen.status is None and seen.in_band is None, seen
        assert seen.text, seen
        served = kind if expect.outcome == "primary" else other_provider
        assert seen.backend == served, seen
        expected_model = fault.model if expect.outcome == "primary" else other_model
        assert seen.model == expected_model
        assert seen.finish in FINISHED, seen  # e.g. a stream without [DONE] still finishes
        assert len(fallback_got) == (expect.outcome == "fallback")
        if stream and expect.outcome == "primary":
            assert seen.text == WHOLE  # a skipped malformed event loses nothing
    # The key that reached each upstream is the decrypted one, never its ciphertext.
    tried = faulty + fallback_got
    keys = {r.headers.get("x-api-key") or r.headers.get("authorization") for r in tried}
    if name != "wrong-key":
        assert keys <= {f"Bearer {OAI_KEY}", ANT_KEY}, keys
    assert elapsed >= expect.min_s, elapsed
    if name == "429-retry-after-over-the-cap":
        # Each retry waited the cap (0.5 s), not the upstream's Retry-After (5 s):
        # seen from the upstream, its requests came closer together than 5 s.
        gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(faulty)]
        assert all(gap < 5 for gap in gaps), gaps
    healthy = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "healthy", "messages": HI, "max_tokens": 4},
        timeout=10,
    )
    assert healthy.status_code == 200  # and the gateway keeps serving


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("kind", ["oai", "ant"], ids=["openai-upstream", "anthropic-upstream"])
def test_a_client_that_leaves_mid_stream_stops_the_upstream(
    gateway: LiveServer, upstream: FakeUpstream, kind: str, client: str
) -> None:
    """An abandoned stream must not keep an upstream generating (and billing)."""
    upstream.reset()
    path, body = "/v1/chat/completions", {"model": f"slow@{kind}", "messages": HI, "stream": True}
    if client == "anthropic":
        path, body = "/v1/messages", {**body, "max_tokens": 64}
    with httpx.stream("POST", f"{gateway.url}{path}", json=body, timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if "lorem" in line or "echo" in line:
                break  # the first content: then the client goes away
    deadline = time.monotonic() + 3
    while upstream.abandoned == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.abandoned == 1  # the upstream saw its reader go, well before its 1.6 s
    assert upstream.count(model="fault-slow-tokens:0.1") == 1


def _prefill(body: dict[str, object]) -> str:
    """The trailing assistant message of an upstream request (its prefill), or ""."""
    messages = body.get("messages")
    assert isinstance(messages, list) and messages
    last = messages[-1]
    return content_text(last.get("content")) if last.get("role") == "assistant" else ""
