"""The prompt cache through a live gateway, seen by the official SDKs: a second
turn reports its reused tokens (OpenAI `cached_tokens`, Anthropic
`cache_read_input_tokens`), streamed or not, and answers exactly what a gateway
without the cache answers; /metrics, the request log and the dashboard's
figures show the reuse."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from .conftest import LiveServer, server_env

pytestmark = pytest.mark.e2e

SYSTEM = "You are the keeper of a lighthouse on a windy northern coast. " * 8
TURN1 = "What do you see tonight?"
TURN2 = "And what will you do about it?"


def start(data: Path, **env: str) -> LiveServer:
    server = LiveServer(data_dir=data, env=server_env(data, **env))
    server.manage("migrate", "--noinput")
    server.manage("build_demo_model")
    server.start()
    return server


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    """One gateway with the prompt cache, one with it off (the reference)."""
    cached = start(tmp_path_factory.mktemp("cached"), GATEWAY_REQUEST_LOG_FLUSH_MS="50")
    try:
        plain = start(tmp_path_factory.mktemp("plain"), GATEWAY_PROMPT_CACHE_BYTES="0")
        try:
            yield cached, plain
        finally:
            plain.stop()
    finally:
        cached.stop()


def openai_turn(
    server: LiveServer, system: str, history: list[dict[str, str]], stream: bool
) -> tuple[str, Any]:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "system", "content": system}, *history]
    options: dict[str, Any] = {"model": "demo", "max_tokens": 12, "temperature": 0}
    if not stream:
        answer = client.chat.completions.create(messages=messages, **options)
        return answer.choices[0].message.content or "", answer.usage
    chunks = list(
        client.chat.completions.create(
            messages=messages, stream=True, stream_options={"include_usage": True}, **options
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage


def anthropic_turn(
    server: LiveServer, system: str, history: list[dict[str, str]], stream: bool
) -> tuple[str, Any]:
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    # This SDK version has no `temperature` argument: sent as an extra body field.
    options: dict[str, Any] = {
        "model": "demo", "max_tokens": 12, "system": system, "messages": history,
        "extra_body": {"temperature": 0},
    }  # fmt: skip
    if stream:
        with client.messages.stream(**options) as events:
            text = "".join(events.text_stream)
            message = events.get_final_message()
        return text, message.usage
    message = client.messages.create(**options)
    return "".join(b.text for b in message.content if b.type == "text"), message.usage


def total_prompt(protocol: str, usage: Any) -> tuple[int, int]:
    """(prompt tokens, of which cached) in either protocol's terms."""
    if protocol == "openai":
        return usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens
    assert usage.cache_creation_input_tokens == 0
    cached = usage.cache_read_input_tokens
    return usage.input_tokens + cached, cached


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_second_turn_reuses_the_first_and_answers_the_same(
    gateways: tuple[LiveServer, LiveServer], protocol: str, stream: bool
) -> None:
    cached, plain = gateways
    turn = openai_turn if protocol == "openai" else anthropic_turn
    system = f"[{protocol} {stream}] {SYSTEM}"  # its own conversation in each case
    history = [{"role": "user", "content": TURN1}]
    first, usage1 = turn(cached, system, history, stream)
    prompt1, reused1 = total_prompt(protocol, usage1)
    assert reused1 < prompt1 // 4  # at most the chat template's opening others share

    history += [{"role": "assistant", "content": first}, {"role": "user", "content": TURN2}]
    second, usage2 = turn(cached, system, history, stream)
    prompt2, reused2 = total_prompt(protocol, usage2)
    assert prompt1 <= reused2 < prompt2

    expected, reference = turn(plain, system, history, stream)
    assert total_prompt(protocol, reference) == (prompt2, 0)
    assert second == expected  # greedy, with and without the cache


def test_metrics_and_the_request_log_show_the_reuse(
    gateways: tuple[LiveServer, LiveServer],
) -> None:
    cached, _ = gateways
    history = [{"role": "user", "content": TURN1}]
    first, _ = openai_turn(cached, SYSTEM, history, False)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": TURN2}]
    _, usage = openai_turn(cached, SYSTEM, history, False)
    reused = usage.prompt_tokens_details.cached_tokens
    assert reused > 0

    exposition = httpx.get(f"{cached.url}/metrics", timeout=10).text
    figures = {
        line.split()[0]: float(line.split()[1])
        for line in exposition.splitlines()
        if line.startswith("gateway_prompt_cache_")
    }
    assert figures["gateway_prompt_cache_hits_total"] >= 1
    assert figures["gateway_prompt_cache_tokens_reused_total"] >= reused
    hits = figures["gateway_prompt_cache_hits_total"]
    assert figures["gateway_prompt_cache_lookups_total"] > hits
    assert 0 < figures["gateway_prompt_cache_bytes"] <= figures["gateway_prompt_cache_max_bytes"]

    # The row is written in a batch shortly after the answer: wait for it.
    deadline = time.monotonic() + 30
    while True:
        with sqlite3.connect(cached.data_dir / "gateway.sqlite3") as db:
            rows = db.execute(
                "SELECT input_tokens, cached_tokens FROM routing_requestlog ORDER BY id"
            ).fetchall()
        if (usage.prompt_tokens, reused) in rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (usage.prompt_tokens, reused) in rows
