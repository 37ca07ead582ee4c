"""Mid-stream continuation and per-target accounting, end to end.

A cloud stream cut mid-answer is finished by the local demo model (which must
truly continue the partial text: checked against the same prefill asked of it
directly); a fallback that refuses prefill is asked once and remembered; and
every change of target shows in X-Gateway-Fallbacks, the request log and
/metrics, a continuation included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from fake_upstream import FakeUpstream
from fake_upstream.replies import content_text

from .conftest import LiveServer, routed_gateway, run_in_shell

pytestmark = pytest.mark.e2e

KEY = "sk-continue-1"
UPSTREAM_KEYS = (KEY,)  # the fake upstream takes these (conftest.upstream)
HI = [{"role": "user", "content": "hello there"}]
PROVIDER = {
    "kind": "openai", "connect_timeout": 0.5, "first_byte_timeout": 1.0,
    "first_token_timeout": 1.0, "stream_idle_timeout": 0.5, "total_timeout": 20.0,
    "max_retries": 0, "breaker_fail_max": 1000, "breaker_reset_timeout": 30.0,
}  # fmt: skip


def spec(upstream: FakeUpstream) -> dict[str, object]:
    cloud = {**PROVIDER, "name": "cloud", "base_url": f"{upstream.url}/v1", "key": KEY}
    refuser = {**cloud, "name": "refuser", "accepts_prefill": True}
    able = {**cloud, "name": "able", "accepts_prefill": True}
    return {
        "providers": [cloud, refuser, able],
        "mappings": [
            {"pattern": "cut-to-local",
             "chain": [{"provider": "cloud", "model": "fault-cut-after:3"}, {"local": "demo"}]},
            {"pattern": "cut-to-refuser",
             "chain": [{"provider": "cloud", "model": "fault-cut-after:3"},
                       {"provider": "refuser", "model": "fault-no-prefill"}]},
            {"pattern": "same-provider",
             "chain": [{"provider": "cloud", "model": "fault-503"},
                       {"provider": "cloud", "model": "gpt-ok"}]},
            {"pattern": "glitch", "chain": [{"provider": "cloud", "model": "fault-malformed:2"}]},
            {"pattern": "cut-tool",
             "chain": [{"provider": "cloud", "model": "fault-cut-after:2"},
                       {"provider": "able", "model": "gpt-able"}]},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    with routed_gateway(tmp_path_factory.mktemp("continue"), spec(upstream), demo=True) as server:
        yield server


def metric(gateway: LiveServer, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in wanted)
    )


def wait_for(check: Callable[[], object], what: str, seconds: float = 10) -> object:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


_ROWS = """
import json, os
from gateway.usage.models import RequestLog
model = json.loads(os.environ["MODEL"])
rows = RequestLog.objects.filter(requested_model=model).order_by("id")
print("ROWS=" + json.dumps(list(rows.values("fallbacks", "attempt_trail", "backend",
      "status", "output_tokens"))))
"""


def log_rows(gateway: LiveServer, model: str) -> list[dict[str, object]]:
    out = run_in_shell(gateway, _ROWS, MODEL=model, doing="reading the request log")
    line = next(x for x in out.splitlines() if x.startswith("ROWS="))
    return list(json.loads(line.removeprefix("ROWS=")))


def test_a_cut_cloud_stream_is_continued_by_the_local_model(
    gateway: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.reset()
    before = metric(gateway, "gateway_continuations_total", model="cut-to-local")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    text, ids, finishes = "", set(), []
    with client.chat.completions.with_streaming_response.create(
        model="cut-to-local", messages=HI, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ) as response:  # fmt: skip
        assert response.headers["x-gateway-backend"] == "cloud"
        usage = None
        for chunk in response.parse():
            ids.add(chunk.id)
            usage = chunk.usage or usage
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finishes += (
                    [chunk.choices[0].finish_reason] if chunk.choices[0].finish_reason else []
                )
    partial = "echo: hello there"  # the three words the cloud sent before the cut
    assert text.startswith(partial) and len(text) > len(partial), text
    assert len(ids) == 1 and len(finishes) == 1  # one stream, one finish
    assert upstream.count(model="fault-cut-after:3") == 1
    # The local model truly continued the partial text: asked the same prefill
    # directly (greedy decoding), it writes the same continuation.
    direct = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    message = direct.messages.create(
        model="demo", max_tokens=10 - 3, extra_body={"temperature": 0},
        messages=[*HI, {"role": "assistant", "content": partial}],  # type: ignore[list-item]
    )  # fmt: skip
    continuation = "".join(b.text for b in message.content if b.type == "text")
    assert text == partial + continuation, (text, continuation)
    assert usage is not None and usage.completion_tokens == 3 + message.usage.output_tokens
    # Recorded: the continuation counter, and which targets served which part.
    wait_for(
        lambda: metric(gateway, "gateway_continuations_total", model="cut-to-local") > before,
        "the continuation counter",
    )
    [row] = wait_for(lambda: log_rows(gateway, "cut-to-local"), "the request log row")  # type: ignore[misc]
    assert row["fallbacks"] == 1 and row["status"] == 200, row
    trail = str(row["attempt_trail"])
    assert trail.startswith("cloud/fault-cut-after:3=upstream_unreachable after 3 chunks"), trail
    assert trail.endswith("local:demo/demo=continued"), trail


_REFUSED_PREFILL: list[str] = []  # the clients whose test ran the refusing fallback


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_a_fallback_that_refuses_prefill_is_asked_once_and_never_shown(
    gateway: LiveServer, upstream: FakeUpstream, client: str
) -> None:
    upstream.reset()
    for _ in range(2):
        in_band = _stream_error(gateway, "cut-to-refuser", client)
        assert "'cloud'" in in_band and "prefill" not in in_band, in_band  # the original failure
    asked = upstream.find(model="fault-no-prefill")
    # Remembered per deployment, in the module's gateway: the first of these
    # tests asks it exactly once, any later one (the other client) never.
    assert len(asked) == (0 if _REFUSED_PREFILL else 1), asked
    _REFUSED_PREFILL.append(client)
    for request in asked:
        last = request.json["messages"][-1]
        assert last["role"] == "assistant" and content_text(last["content"]) == "echo: hello there"


def _stream_error(gateway: LiveServer, model: str, client: str) -> str:
    if client == "openai":
        sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError) as info:
            for _ in sdk.chat.completions.create(model=model, messages=HI, stream=True):
                pass
        return info.value.message
    ant = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIError) as raised:
        for _ in ant.messages.create(model=model, max_tokens=8, messages=HI, stream=True):  # type: ignore[arg-type]
            pass
    body = raised.value.body if isinstance(raised.value.body, dict) else {}
    return str((body.get("error") or {}).get("message") or raised.value.message)


def test_a_change_of_model_on_one_provider_is_a_fallback(
    gateway: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.reset()
    before = metric(gateway, "gateway_fallbacks_total", model="same-provider")
    body = {"model": "same-provider", "messages": HI, "max_tokens": 4}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=20)
    assert response.status_code == 200
    assert response.headers["x-gateway-fallbacks"] == "1"
    assert response.headers["x-gateway-attempts"] == "cloud/fault-503=503, cloud/gpt-ok=ok"
    wait_for(
        lambda: metric(gateway, "gateway_fallbacks_total", model="same-provider") == before + 1,
        "the fallback counter",
    )
    [row] = wait_for(lambda: log_rows(gateway, "same-provider"), "the request log row")  # type: ignore[misc]
    assert row["fallbacks"] == 1


def test_a_malformed_event_is_skipped_and_counted(
    gateway: LiveServer, upstream: FakeUpstream
) -> None:
    before = metric(
        gateway, "gateway_upstream_errors_total", backend="cloud", outcome="malformed_event"
    )
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="glitch", messages=HI, max_tokens=8, stream=True
        )
        if chunk.choices
    )
    assert text == "echo: hello there lorem ipsum dolor sit amet"  # nothing lost
    wait_for(
        lambda: metric(
            gateway, "gateway_upstream_errors_total", backend="cloud", outcome="malformed_event"
        ) == before + 1,
        "the malformed_event counter",
    )  # fmt: skip


def test_a_stream_broken_inside_a_tool_call_is_not_continued(
    gateway: LiveServer, upstream: FakeUpstream
) -> None:
    """A partial tool call cannot be resumed safely: the original failure, in-band."""
    upstream.reset()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    tool = {"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                         "required": ["q"]}}}  # fmt: skip
    pieces = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="cut-tool",
            messages=HI,
            tools=[tool],
            tool_choice="required",
            stream=True,  # type: ignore[list-item]
        ):
            if chunk.choices and chunk.choices[0].delta.tool_calls:
                pieces.append(chunk.choices[0].delta.tool_calls[0])
    assert pieces  # part of the call arrived before the cut
    assert "'cloud'" in info.value.message
    assert upstream.count(model="gpt-able") == 0  # never asked to continue
