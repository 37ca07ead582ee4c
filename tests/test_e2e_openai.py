"""The OpenAI protocol end to end: official SDK and raw HTTP against live daphne."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from .conftest import LiveServer

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Tell me a story about a lighthouse."}]


@pytest.fixture(scope="module")
def client(live_gateway: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key="unused", max_retries=0)


def test_non_streaming_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="demo", messages=HELLO, max_tokens=16, temperature=0, user="tester"
    )
    choice = response.choices[0]
    assert response.model == "demo"
    assert response.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None
    assert response.usage.prompt_tokens > 5
    assert 1 <= response.usage.completion_tokens <= 16
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_greedy_is_deterministic_and_seed_is_honoured(client: openai.OpenAI) -> None:
    def run(**kw: object) -> str:
        r = client.chat.completions.create(model="demo", messages=HELLO, max_tokens=24, **kw)
        return r.choices[0].message.content or ""

    assert run(temperature=0) == run(temperature=0)
    assert run(temperature=1.0, seed=7) == run(temperature=1.0, seed=7)
    samples = {run(temperature=1.5, seed=s) for s in range(4)}
    assert len(samples) > 1, "different seeds should sample different text"


def test_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(
        model="demo", messages=HELLO, max_tokens=20, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="demo", messages=HELLO, max_tokens=20, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.choices[0].message.content
    assert all(c.id == chunks[0].id for c in chunks)


def test_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
            max_completion_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert 1 <= usage_chunk.usage.completion_tokens <= 5
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_strings(client: openai.OpenAI) -> None:
    base = (
        client.chat.completions.create(model="demo", messages=HELLO, max_tokens=40, temperature=0)
        .choices[0]
        .message.content
        or ""
    )
    assert len(base) > 12
    stop = base[8:12]
    cut = client.chat.completions.create(
        model="demo", messages=HELLO, max_tokens=40, temperature=0, stop=[stop, "\u2603"]
    )
    assert cut.choices[0].message.content == base[: base.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model="demo", messages=HELLO, max_tokens=40, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == base[: base.index(stop)]


async def test_async_client(live_gateway: LiveServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"{live_gateway.url}/v1", api_key="x", max_retries=0)
    async with client:
        results = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="demo", messages=HELLO, max_tokens=12, temperature=0
                )
                for _ in range(3)
            ]
        )
        texts = {r.choices[0].message.content for r in results}
        assert len(texts) == 1  # batched greedy requests agree with each other
        stream = await client.chat.completions.create(
            model="demo", messages=HELLO, max_tokens=12, temperature=0, stream=True
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert streamed == texts.pop()


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert "demo" in [m.id for m in models.data]
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_unknown_model_with_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"


def _post(server: LiveServer, content: bytes | None = None, **kw: object) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=60,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, None),
        (b"[1, 2]", 400, None, None),
        (b'{"model": "demo"}', 400, "messages", None),
        (b'{"model": "demo", "messages": []}', 400, "messages", None),
        (b'{"model": "demo", "messages": [{"role": "wizard", "content": "x"}]}', 400,
         "messages.0.role", None),
        (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
         400, "temperature", None),
        (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
         400, "max_tokens", None),
        (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "n": 2}', 400,
         "n", "unsupported_value"),
        (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "logprobs": true}',
         400, "logprobs", "unsupported_feature"),
        (b'{"model": "demo", "messages": [{"role": "user", "content": [{"type": "image_url",'
         b' "image_url": {"url": "https://example.invalid/cat.png"}}]}]}', 400, "messages",
         "unsupported_feature"),
        (b'{"model": "demo", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}',
         400, "messages.0.content.0", None),
        (b'{"model": "ghost", "messages": [{"role": "user", "content": "x"}]}', 404, "model",
         "model_not_found"),
    ],
)  # fmt: skip
def test_errors_use_openai_envelope(
    live_gateway: LiveServer, body: bytes, status: int, param: str | None, code: str | None
) -> None:
    response = _post(live_gateway, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert httpx.get(f"{live_gateway.url}/health").status_code == 200


def test_context_length_exceeded(live_gateway: LiveServer) -> None:
    words = " ".join(f"word{i}" for i in range(6000))
    body = {"model": "demo", "messages": [{"role": "user", "content": words}]}
    response = httpx.post(f"{live_gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_oversized_body_is_413(live_gateway: LiveServer) -> None:
    big = b'{"model": "demo", "messages": [{"role": "user", "content": "' + b"a" * (33 << 20)
    response = _post(live_gateway, big + b'"}]}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{live_gateway.url}/health").status_code == 200


def test_unknown_path_and_method(live_gateway: LiveServer) -> None:
    response = httpx.get(f"{live_gateway.url}/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
    response = httpx.get(f"{live_gateway.url}/v1/chat/completions")
    assert response.status_code == 405
    assert "error" in response.json()


def test_health(live_gateway: LiveServer) -> None:
    body = httpx.get(f"{live_gateway.url}/health").json()
    assert body["status"] == "ok"
    assert "active_sequences" in body["engine"]


def test_disconnect_frees_the_slot(live_gateway: LiveServer) -> None:
    """A client that goes away mid-stream must not leave the model generating."""
    body = {
        "model": "demo",
        "messages": HELLO,
        "max_tokens": 3000,
        "temperature": 0.8,
        "seed": 1,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{live_gateway.url}/v1/chat/completions", json=body, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
        engine = httpx.get(f"{live_gateway.url}/health").json()["engine"]
        assert engine["active_sequences"] == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        engine = httpx.get(f"{live_gateway.url}/health").json()["engine"]
        if engine["active_sequences"] == 0:
            break
        time.sleep(0.05)
    assert engine["active_sequences"] == 0
