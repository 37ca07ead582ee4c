"""Memory per request stays proportional to what the request may use: huge
prompts are refused by size before any tokenizing, on a live gateway."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from inference.errors import ContextLengthExceeded, PayloadTooLarge
from inference.local.prompt import MAX_TOKENIZE_CHARS, check_size

from .conftest import LiveServer

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
PROMPT = "word " * ((19 << 20) // 5)  # about 19 MiB


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak(pid: int) -> None:
    """Start VmHWM over from the current RSS (proc(5), clear_refs "5"): the gateway
    is the session's, and earlier tests' peaks are not this test's."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_size_checks_come_before_tokenizing() -> None:
    few = [{"role": "user", "content": "x" * 100}]
    check_size(few, None, model_name="m", context_length=4096, longest=16, generating=True)
    # 16 characters per token at most: 65,536 characters are at least 4,096 tokens.
    big = [{"role": "user", "content": "x" * 65_536}]
    with pytest.raises(ContextLengthExceeded):
        check_size(big, None, model_name="m", context_length=4096, longest=16, generating=True)
    check_size(big, None, model_name="m", context_length=4096, longest=16, generating=False)
    huge = [{"role": "user", "content": "x" * (MAX_TOKENIZE_CHARS + 1)}]
    for generating in (False, True):
        with pytest.raises(PayloadTooLarge):
            check_size(
                huge, None, model_name="m", context_length=10**9, longest=1, generating=generating
            )
    tools = [{"type": "function", "function": {"name": "t", "parameters": {"d": "x" * 70_000}}}]
    with pytest.raises(ContextLengthExceeded):
        check_size(few, tools, model_name="m", context_length=4096, longest=16, generating=True)


def test_a_19_mib_prompt_is_refused_without_tokenizing(live_gateway: LiveServer) -> None:
    pid = live_gateway.process.pid  # type: ignore[union-attr]
    with httpx.Client(base_url=live_gateway.url, timeout=120) as client:
        small = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/messages/count_tokens", json=small).status_code == 200
        reset_peak(pid)
        before = status(pid)
        assert before["VmHWM"] - before["VmRSS"] < 50, before  # the reset took
        count = {"model": "demo", "messages": [{"role": "user", "content": PROMPT}]}
        response = client.post("/v1/messages/count_tokens", content=json.dumps(count), headers=JSON)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        chat = {**count, "max_tokens": 5}
        response = client.post("/v1/chat/completions", content=json.dumps(chat), headers=JSON)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        # Past the context for sure, though small enough to tokenize: refused by size.
        chat["messages"] = [{"role": "user", "content": "x" * 70_000}]
        response = client.post("/v1/chat/completions", json=chat)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
        # The last failed request (its error, its traceback) is held until the
        # next ones replace it: memory that stays is then what is really kept.
        for _ in range(3):
            client.post("/v1/messages/count_tokens", json=small)
            client.post("/v1/chat/completions", json={**small, "max_tokens": 1})
        after = status(pid)
    # Tokenizing the 19 MiB prompt took about 5 GB; parsing and refusing it, little.
    assert after["VmHWM"] - before["VmRSS"] < 200, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 50, (before, after)


def test_a_prompt_past_the_context_is_still_counted(live_gateway: LiveServer) -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hello " * 20_000}]}
    response = httpx.post(f"{live_gateway.url}/v1/messages/count_tokens", json=body, timeout=60)
    assert response.status_code == 200
    assert response.json()["input_tokens"] > 4096
    assert response.headers["x-gateway-count"] == "exact"
