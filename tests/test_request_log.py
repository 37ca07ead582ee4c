"""The request log end to end: one row per request (success, fallback, failure,
streamed or not), written in batches off the request path, nothing lost when the
gateway is stopped right after answering.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from fake_upstream import FakeUpstream

from .conftest import (
    LiveServer,
    configure_routing,
    make_api_keys,
    read_timeout,
    server_env,
    single_try_provider,
)

pytestmark = pytest.mark.e2e

UPSTREAM_KEY = "sk-upstream-log-321"
UPSTREAM_KEYS = (UPSTREAM_KEY,)  # the fake upstream takes these (conftest.upstream)
HI = [{"role": "user", "content": "hello there"}]
PROVIDER = single_try_provider(UPSTREAM_KEY)


def start_gateway(data: Path, upstream: FakeUpstream, **env: str) -> tuple[LiveServer, str]:
    """A gateway requiring keys, with one key ("app"); the fallback routes through
    the fake upstream's fault-503 to the local demo model."""
    settings = server_env(data, GATEWAY_REQUIRE_API_KEYS="1", ENABLE_CLOUD_ROUTING="1", **env)
    server = LiveServer(data_dir=data, env=settings)
    server.prepare(demo=True)
    configure_routing(
        server,
        {
            "providers": [{**PROVIDER, "name": "flaky", "base_url": f"{upstream.url}/v1"}],
            "mappings": [
                {"pattern": "fallback", "chain": [
                    {"provider": "flaky", "model": "fault-503"}, {"local": "demo"}]},
                {"pattern": "alone-503", "chain": [{"provider": "flaky", "model": "fault-503"}]},
                {"pattern": "slow", "chain": [
                    {"provider": "flaky", "model": "fault-slow-tokens:0.2"}]},
                {"pattern": "hang", "chain": [{"provider": "flaky", "model": "fault-hang"}]},
            ],
        },
    )  # fmt: skip
    secret = make_api_keys(server, {"app": {}})["app"]
    server.start()
    return server, secret


def read_rows(data: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(data / "gateway.sqlite3") as db:
        db.row_factory = sqlite3.Row
        query = (
            "SELECT l.*, k.name AS key_name FROM routing_requestlog l "
            "LEFT JOIN routing_apikey k ON k.id = l.api_key_id ORDER BY l.id"
        )
        return [dict(row) for row in db.execute(query)]


def test_every_request_is_logged_and_nothing_is_lost_on_shutdown(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # Batches wait up to a minute: only the shutdown can have written the rows.
    server, secret = start_gateway(tmp_path, upstream, GATEWAY_REQUEST_LOG_FLUSH_MS="60000")
    try:
        oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=secret, max_retries=0)
        ant = anthropic.Anthropic(base_url=server.url, api_key=secret, max_retries=0)
        seen: list[tuple[int, int]] = []  # the usage each client saw

        answer = oai.chat.completions.create(model="demo", messages=HI, max_tokens=6)
        assert answer.usage is not None
        seen.append((answer.usage.prompt_tokens, answer.usage.completion_tokens))
        chunks = list(oai.chat.completions.create(
            model="demo", messages=HI, max_tokens=6, stream=True,
            stream_options={"include_usage": True}))  # fmt: skip
        usage = chunks[-1].usage
        assert usage is not None
        seen.append((usage.prompt_tokens, usage.completion_tokens))
        message = ant.messages.create(model="fallback", max_tokens=6, messages=HI)
        # Anthropic counts prompt-cache reads apart; the log has the whole prompt.
        reused = message.usage.cache_read_input_tokens or 0
        seen.append((message.usage.input_tokens + reused, message.usage.output_tokens))
        with ant.messages.stream(model="fallback", max_tokens=6, messages=HI) as stream:
            final = stream.get_final_message()
        reused = final.usage.cache_read_input_tokens or 0
        seen.append((final.usage.input_tokens + reused, final.usage.output_tokens))
        failed = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "alone-503", "messages": HI, "stream": True},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert failed.status_code == 503
        refused = httpx.post(f"{server.url}/v1/messages", json={}, timeout=10)
        assert refused.status_code == 401
        assert read_rows(tmp_path) == []  # buffered, not written on the request path
    finally:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0

    rows = read_rows(tmp_path)
    assert "shutdown: request log written" in server.log()
    assert [(r["protocol"], r["endpoint"], r["requested_model"], r["stream"], r["status"])
            for r in rows] == [
        ("openai", "chat.completions", "demo", 0, 200),
        ("openai", "chat.completions", "demo", 1, 200),
        ("anthropic", "messages", "fallback", 0, 200),
        ("anthropic", "messages", "fallback", 1, 200),
        ("openai", "chat.completions", "alone-503", 1, 503),
        ("anthropic", "messages", "", 0, 401),
    ]  # fmt: skip
    assert [(r["input_tokens"], r["output_tokens"]) for r in rows[:4]] == seen
    for row in rows[:2]:
        assert (row["backend"], row["served_model"], row["attempts"], row["fallbacks"]) == (
            "local:demo", "demo", 1, 0)  # fmt: skip
    for row in rows[2:4]:
        assert (row["backend"], row["served_model"], row["attempts"], row["fallbacks"]) == (
            "local:demo", "demo", 2, 1)  # fmt: skip
        assert row["attempt_trail"] == "flaky/fault-503=503, local:demo/demo=ok"
    assert rows[4]["attempts"] == 1 and rows[4]["attempt_trail"] == "flaky/fault-503=503"
    assert rows[4]["error_type"] and rows[4]["input_tokens"] == rows[4]["output_tokens"] == 0
    assert rows[5]["error_type"] == "invalid_api_key" and rows[5]["key_name"] is None
    assert all(r["key_name"] == "app" for r in rows[:5])
    assert all(r["latency_ms"] > 0 and r["error_type"] == "" for r in rows[:4])
    assert [r["ttft_ms"] is not None for r in rows[:4]] == [False, True, False, True]
    assert all(0 < r["ttft_ms"] <= r["latency_ms"] for r in rows if r["ttft_ms"] is not None)


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[tuple[LiveServer, str]]:
    """One gateway for the tests that read rows while it runs (each its own model
    names): rows written every 50 ms."""
    server, secret = start_gateway(
        tmp_path_factory.mktemp("request-log"), upstream, GATEWAY_REQUEST_LOG_FLUSH_MS="50"
    )
    yield server, secret
    server.stop()


def rows_of(data: Path, *models: str, count: int) -> list[dict[str, Any]]:
    """The rows for these requested models, once `count` of them are written."""
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in read_rows(data) if r["requested_model"] in models]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_rows_are_written_in_batches_while_the_gateway_runs(
    running: tuple[LiveServer, str],
) -> None:
    server, secret = running
    body = {"model": "demo", "messages": HI, "max_tokens": 4}
    for _ in range(3):
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body,
                              headers={"x-api-key": secret}, timeout=30)  # fmt: skip
        assert response.status_code == 200
    rows = rows_of(server.data_dir, "demo", count=3)
    assert [(r["status"], r["key_name"]) for r in rows] == [(200, "app")] * 3
    with sqlite3.connect(server.data_dir / "gateway.sqlite3") as db:
        (last_used,) = db.execute("SELECT last_used_at FROM routing_apikey").fetchone()
    assert last_used is not None  # stamped by the writer, not per request


def test_a_client_that_leaves_is_logged_as_499(running: tuple[LiveServer, str]) -> None:
    """Waiting for an answer or in the middle of a stream: either way one row, 499."""
    server, secret = running
    headers = {"authorization": f"Bearer {secret}"}
    url = f"{server.url}/v1/chat/completions"
    with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting
        httpx.post(url, json={"model": "hang", "messages": HI}, headers=headers,
                   timeout=read_timeout(0.5))  # fmt: skip
    body = {"model": "slow", "messages": HI, "stream": True}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        for line in response.iter_lines():
            if '"content":"' in line and "echo" in line:
                break  # the first content, then the client goes away
    rows = rows_of(server.data_dir, "hang", "slow", count=2)
    assert [(r["requested_model"], r["status"], r["error_type"]) for r in rows] == [
        ("hang", 499, "client_disconnected"),
        ("slow", 499, "client_disconnected"),
    ]
    assert rows[1]["stream"] == 1 and rows[1]["ttft_ms"] is not None
