"""Every fault of the fake upstream, through a live gateway, with both official SDKs.

For each fault, each upstream protocol (an OpenAI-compatible and an Anthropic
provider) and each client (the `openai` and `anthropic` SDKs, streamed and
not): what the client received, how many attempts the fake upstream saw, how
long it took (as bounds), and that the gateway answers the next request.
Attempts are counted at the upstream, never read from configuration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import anthropic
import httpx
import openai
import pytest

from inference.fake_upstream import FakeUpstream

from .conftest import LiveServer, routed_gateway

pytestmark = pytest.mark.e2e

OAI_KEY, ANT_KEY = "sk-matrix-oai", "sk-ant-matrix"
UPSTREAM_KEYS = (OAI_KEY, ANT_KEY)  # the fake upstream takes these (conftest.upstream)
HI = [{"role": "user", "content": "hello there"}]
FIRST_BYTE, IDLE, CAP = 0.5, 0.4, 0.5
PROVIDER = {
    "connect_timeout": 0.5, "first_byte_timeout": FIRST_BYTE, "stream_idle_timeout": IDLE,
    "total_timeout": 8.0, "max_retries": 2, "retry_backoff": 0.02, "retry_after_cap": CAP,
    "breaker_fail_max": 10_000, "breaker_reset_timeout": 1.0,
}  # fmt: skip
# The fallback always speaks the other protocol, so failing over also translates.
OTHER = {"oai": ("ant", "claude-fine"), "ant": ("oai", "gpt-fine")}


@dataclass(frozen=True)
class Expect:
    """What the client sees: served by "primary" or "fallback", or an HTTP error
    status, or (streams) content then an in-band error."""

    outcome: str  # "primary", "fallback", "error", "in-band"
    attempts: int  # requests the faulty model's upstream saw
    status: int | None = None  # for "error": the OpenAI-protocol status
    min_s: float = 0.0
    max_s: float = 4.0


@dataclass(frozen=True)
class Fault:
    model: str
    fallback: bool
    whole: Expect  # non-streaming
    streamed: Expect
    anthropic_status: dict[int, int] = field(default_factory=dict)  # OpenAI status -> Anthropic


RETRIED = 3  # 1 + max_retries
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
        Expect("error", RETRIED, 429, 2 * CAP - 0.02, 2.5),
        Expect("error", RETRIED, 429, 2 * CAP - 0.02, 2.5),
    ),
    "429": Fault("fault-429", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    "reset": Fault("fault-reset", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    "close": Fault("fault-close", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)),
    "hang": Fault(
        "fault-hang",
        True,
        Expect("fallback", RETRIED, None, 3 * FIRST_BYTE, 3.5),
        Expect("fallback", RETRIED, None, 3 * FIRST_BYTE, 3.5),
    ),
    "slow-first-token": Fault(
        "fault-slow-first-token:0.2",
        False,
        Expect("primary", 1, None, 0.2),
        Expect("primary", 1, None, 0.2),
    ),
    "slow-first-token-over-the-limit": Fault(
        "fault-slow-first-token:3",
        True,
        Expect("fallback", RETRIED, None, 3 * FIRST_BYTE, 3.5),
        Expect("fallback", RETRIED, None, 3 * FIRST_BYTE, 3.5),
    ),
    "cut": Fault("fault-cut-after:3", True, Expect("fallback", RETRIED), Expect("in-band", 1)),
    "stall": Fault(
        "fault-stall-after:3",
        True,
        Expect("fallback", RETRIED, None, 3 * FIRST_BYTE, 3.5),
        Expect("in-band", 1, None, IDLE, 2.0),
    ),
    "malformed-after-content": Fault(
        "fault-malformed:2", True, Expect("fallback", RETRIED), Expect("in-band", 1)
    ),
    "malformed-before-content": Fault(
        "fault-malformed:0", True, Expect("fallback", RETRIED), Expect("fallback", RETRIED)
    ),
    "no-done": Fault("fault-no-done", False, Expect("primary", 1), Expect("primary", 1)),
    "context-length": Fault(
        "fault-context-length", True, Expect("error", 1, 400), Expect("error", 1, 400)
    ),
    "401": Fault("fault-401", True, Expect("fallback", 1), Expect("fallback", 1)),
    "403": Fault("fault-403", True, Expect("fallback", 1), Expect("fallback", 1)),
    "wrong-key": Fault("gpt-any", True, Expect("fallback", 1), Expect("fallback", 1)),
    "overloaded-in-stream": Fault(
        "fault-stream-overloaded:2", True, Expect("fallback", RETRIED), Expect("in-band", 1)
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
                chain.append({"provider": other, "model": model})
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


@dataclass
class Seen:
    text: str = ""
    model: str = ""
    status: int | None = None  # an HTTP error before any content
    in_band: str | None = None  # an error after content
    backend: str = ""
    error: str = ""  # the message of an HTTP error
    code: str | None = None  # its code (OpenAI) or type (Anthropic)
    finish: str | None = None  # finish_reason / stop_reason of a whole answer


def call_openai(gateway: LiveServer, model: str, stream: bool) -> Seen:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=20)
    seen = Seen()
    try:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=HI, max_tokens=8
            )
            reply = raw.parse()
            seen.text, seen.model = reply.choices[0].message.content or "", reply.model
            seen.backend, seen.finish = (
                raw.headers["x-gateway-backend"],
                reply.choices[0].finish_reason,
            )
            return seen
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=HI, max_tokens=8, stream=True
        ) as response:
            seen.backend = response.headers["x-gateway-backend"]
            try:
                for chunk in response.parse():
                    seen.model = chunk.model
                    if chunk.choices:
                        seen.text += chunk.choices[0].delta.content or ""
                        seen.finish = chunk.choices[0].finish_reason or seen.finish
            except openai.APIError as exc:
                seen.in_band = exc.message
    except openai.APIStatusError as exc:
        seen.status, seen.error, seen.code = exc.status_code, exc.message, exc.code
        seen.in_band = None
    return seen


def call_anthropic(gateway: LiveServer, model: str, stream: bool) -> Seen:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=20)
    seen = Seen()
    try:
        if not stream:
            raw = client.messages.with_raw_response.create(
                model=model,
                max_tokens=8,
                messages=HI,  # type: ignore[arg-type]
            )
            message = raw.parse()
            seen.text = "".join(b.text for b in message.content if b.type == "text")
            seen.model, seen.backend = message.model, raw.headers["x-gateway-backend"]
            seen.finish = message.stop_reason
            return seen
        with client.messages.with_streaming_response.create(
            model=model,
            max_tokens=8,
            messages=HI,
            stream=True,  # type: ignore[arg-type]
        ) as response:
            seen.backend = response.headers["x-gateway-backend"]
            try:
                for event in response.parse():
                    if event.type == "message_start":
                        seen.model = event.message.model
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        seen.text += event.delta.text
                    elif event.type == "message_delta":
                        seen.finish = event.delta.stop_reason
            except anthropic.APIError as exc:  # its message abbreviates the event: read that
                error = exc.body.get("error") if isinstance(exc.body, dict) else None
                seen.in_band = error.get("message") if isinstance(error, dict) else exc.message
    except anthropic.APIStatusError as exc:
        seen.status, seen.error = exc.status_code, exc.message
        body = exc.body if isinstance(exc.body, dict) else {}
        seen.code = (body.get("error") or {}).get("type")
    return seen


# A whole answer ends with a finish reason, whichever protocol was spoken.
FINISHED = {"stop", "length", "end_turn", "max_tokens"}


CLIENTS = {"openai": call_openai, "anthropic": call_anthropic}


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
    if expect.outcome == "error":
        status = expect.status
        if client == "anthropic":
            status = fault.anthropic_status.get(status, status)  # type: ignore[arg-type]
        assert seen.status == status, seen
        assert upstream.count(model=other_model) == 0  # the caller's own error: no fallback
        if name == "context-length":  # the upstream's own verdict, in the caller's terms
            wanted = "context_length_exceeded" if client == "openai" else "invalid_request_error"
            assert seen.code == wanted, seen
        else:
            assert str(status) in seen.error or kind in seen.error, seen  # says what failed
    elif expect.outcome == "in-band":
        assert seen.text, seen  # content arrived ...
        assert seen.in_band, seen  # ... and then the failure was said, not hidden
        assert seen.backend == kind
        # It says which backend broke (an Anthropic upstream's own error event may go
        # to an Anthropic client as it was: then it says what broke).
        relayed = client == "anthropic" and kind == "ant" and "overloaded" in name
        assert ("verloaded" in seen.in_band) if relayed else f"'{kind}'" in seen.in_band, seen
        assert upstream.count(model=other_model) == 0
    else:
        assert seen.status is None and seen.in_band is None, seen
        assert seen.text, seen
        served = kind if expect.outcome == "primary" else other_provider
        assert seen.backend == served, seen
        expected_model = fault.model if expect.outcome == "primary" else other_model
        assert seen.model == expected_model
        assert seen.finish in FINISHED, seen  # e.g. a stream without [DONE] still finishes
        assert upstream.count(model=other_model) == (expect.outcome == "fallback")
    # The key that reached each upstream is the decrypted one, never its ciphertext.
    tried = faulty + upstream.find(model=other_model)
    keys = {r.headers.get("x-api-key") or r.headers.get("authorization") for r in tried}
    if name != "wrong-key":
        assert keys <= {f"Bearer {OAI_KEY}", ANT_KEY}, keys
    assert expect.min_s <= elapsed <= expect.max_s, elapsed
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
