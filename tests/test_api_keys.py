"""Client API keys on a live gateway that requires them: 401, 403 and 429 on every
/v1 endpoint, in each caller's own envelope, through both official SDKs and raw
HTTP; limits shared by two gateway processes through a real Redis.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from .conftest import ROOT, LiveServer, make_api_keys, server_env, start_together
from .data_templates import TEMPLATES

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hello there"}]
AV = {"anthropic-version": "2023-06-01"}

KEYS: dict[str, dict[str, object]] = {
    "ok": {},
    "gpt-only": {"allowed_models": ["gpt-*", "o?"]},
    "demo-only": {"allowed_models": ["dem?"]},
    "rpm": {"requests_per_minute": 2},
    "rpm-2": {"requests_per_minute": 2},
    "tpm": {"tokens_per_minute": 5},
    "disabled": {"enabled": False},
    "expired": {"expires_in_days": -1},
}

# (method, path, body, headers, envelope): every /v1 endpoint, in both envelopes.
ENDPOINTS = [
    ("POST", "/v1/chat/completions", {"model": "demo", "messages": HI, "max_tokens": 4}, {},
     "openai"),
    ("POST", "/v1/messages", {"model": "demo", "messages": HI, "max_tokens": 4}, AV, "anthropic"),
    ("POST", "/v1/messages/count_tokens", {"model": "demo", "messages": HI}, AV, "anthropic"),
    ("GET", "/v1/models", None, {}, "openai"),
    ("GET", "/v1/models", None, AV, "anthropic"),
    ("GET", "/v1/models/demo", None, {}, "openai"),
    ("GET", "/v1/models/demo", None, AV, "anthropic"),
]  # fmt: skip
ENDPOINT_IDS = [f"{m} {p} {e}" for m, p, _, _, e in ENDPOINTS]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("keyed")
    # The production refresh period: changes from another process arrive within it.
    env = server_env(data, GATEWAY_REQUIRE_API_KEYS="1", GATEWAY_API_KEYS_REFRESH_SECONDS="1")
    server = LiveServer(data_dir=data, env=env)
    server.prepare(demo=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(gateway: LiveServer) -> dict[str, str]:
    made = make_api_keys(gateway, KEYS)
    # The running server sees new keys within GATEWAY_API_KEYS_REFRESH_SECONDS.
    assert wait_for_status(gateway, made["ok"], 200) == 200
    return made


def call(
    gateway: LiveServer, endpoint: tuple[Any, ...], auth: dict[str, str], model: str = "demo"
) -> httpx.Response:
    method, path, body, headers, _ = endpoint
    if body is not None:
        body = {**body, "model": model}
    path = path.replace("/demo", f"/{model}")
    return httpx.request(
        method, f"{gateway.url}{path}", json=body, headers={**headers, **auth}, timeout=30
    )


def assert_error(response: httpx.Response, envelope: str, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    if envelope == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == error_type
    else:
        assert body["error"]["type"] == error_type
        assert set(body["error"]) == {"message", "type", "param", "code"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_endpoint_requires_a_valid_key(gateway, keys, endpoint) -> None:
    envelope = endpoint[-1]
    assert_error(call(gateway, endpoint, {}), envelope, 401, "authentication_error")
    for refused in (
        bearer("gw-not-a-real-key"),
        {"x-api-key": "sk-whatever"},
        {"Authorization": f"Basic {keys['ok']}"},  # only the bearer scheme carries a key
        bearer(keys["disabled"]),
        {"x-api-key": keys["expired"]},
    ):
        assert_error(call(gateway, endpoint, refused), envelope, 401, "authentication_error")
    assert call(gateway, endpoint, bearer(keys["ok"])).status_code == 200
    assert call(gateway, endpoint, {"x-api-key": keys["ok"]}).status_code == 200


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e[1] != "/v1/models"],
                         ids=[i for i, e in zip(ENDPOINT_IDS, ENDPOINTS, strict=True)
                              if e[1] != "/v1/models"])  # fmt: skip
def test_a_model_outside_the_keys_patterns_is_403(gateway, keys, endpoint) -> None:
    envelope = endpoint[-1]
    response = call(gateway, endpoint, bearer(keys["gpt-only"]))
    assert_error(response, envelope, 403, "permission_error")
    assert "demo" in response.json()["error"]["message"]
    assert call(gateway, endpoint, bearer(keys["demo-only"])).status_code == 200


def test_models_list_shows_only_the_models_a_key_may_use(gateway, keys) -> None:
    listed = httpx.get(f"{gateway.url}/v1/models", headers=bearer(keys["gpt-only"]), timeout=10)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == []
    listed = httpx.get(f"{gateway.url}/v1/models", headers=bearer(keys["demo-only"]), timeout=10)
    assert [m["id"] for m in listed.json()["data"]] == ["demo"]


def test_openai_sdk_sends_the_key_as_bearer(gateway, keys) -> None:
    def client(secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)

    answer = client(keys["ok"]).chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert answer.choices[0].message.content
    assert [m.id for m in client(keys["ok"]).models.list()] == ["demo"]
    for secret, says in (("gw-wrong", "Invalid"), (keys["disabled"], "disabled"),
                         (keys["expired"], "expired")):  # fmt: skip
        with pytest.raises(openai.AuthenticationError) as info:
            client(secret).chat.completions.create(model="demo", messages=HI, max_tokens=4)
        assert info.value.status_code == 401
        assert says in info.value.message
        assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client(keys["gpt-only"]).chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert denied.value.status_code == 403
    assert denied.value.code == "model_not_allowed"


def test_anthropic_sdk_key_is_accepted_and_refusals_are_anthropic_errors(gateway, keys) -> None:
    def client(secret: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0)

    message = client(keys["ok"]).messages.create(model="demo", max_tokens=4, messages=HI)
    assert message.content
    assert client(keys["ok"]).messages.count_tokens(model="demo", messages=HI).input_tokens > 0
    for secret in ("gw-wrong", keys["disabled"], keys["expired"]):
        with pytest.raises(anthropic.AuthenticationError) as info:
            client(secret).messages.create(model="demo", max_tokens=4, messages=HI)
        assert info.value.status_code == 401
        assert info.value.response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client(keys["gpt-only"]).messages.create(model="demo", max_tokens=4, messages=HI)
    assert denied.value.response.json()["error"]["type"] == "permission_error"


def retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert 1 <= value <= 60
    return value


def test_over_the_request_limit_is_429_with_retry_after(gateway, keys) -> None:
    secret = keys["rpm"]
    oai = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)
    ant = anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0)
    oai.chat.completions.create(model="demo", messages=HI, max_tokens=4)
    ant.messages.create(model="demo", max_tokens=4, messages=HI)
    with pytest.raises(openai.RateLimitError) as refused:
        oai.chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert refused.value.code == "rate_limit_exceeded"
    retry_after(refused.value.response)
    with pytest.raises(anthropic.RateLimitError) as refused_ant:
        ant.messages.create(model="demo", max_tokens=4, messages=HI)
    assert refused_ant.value.response.json()["error"]["type"] == "rate_limit_error"
    assert "requests per minute" in refused_ant.value.response.json()["error"]["message"]
    retry_after(refused_ant.value.response)
    # A key over its limit is refused everywhere, model listings too ...
    listed = httpx.get(f"{gateway.url}/v1/models", headers=bearer(secret))
    assert listed.status_code == 429 and listed.json()["error"]["type"] == "rate_limit_error"
    retry_after(listed)
    card = httpx.get(f"{gateway.url}/v1/models/demo", headers={**bearer(secret), **AV})
    assert card.status_code == 429 and card.json()["error"]["type"] == "rate_limit_error"


def test_listing_models_does_not_use_up_requests(gateway, keys) -> None:
    """... but a key under its limit may list models without spending requests on it."""
    secret = keys["rpm-2"]
    for _ in range(4):
        assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(secret)).status_code == 200
    oai = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)
    for _ in range(2):
        oai.chat.completions.create(model="demo", messages=HI, max_tokens=2)


def test_over_the_token_limit_is_429_with_retry_after(gateway, keys) -> None:
    secret = keys["tpm"]
    oai = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)
    answer = oai.chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert answer.usage is not None and answer.usage.total_tokens > 5
    body = {"model": "demo", "max_tokens": 4, "messages": HI}
    refused = httpx.post(
        f"{gateway.url}/v1/messages", json=body, headers={**AV, "x-api-key": secret}
    )
    assert_error(refused, "anthropic", 429, "rate_limit_error")
    assert "tokens per minute" in refused.json()["error"]["message"]
    retry_after(refused)
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert info.value.response.headers["retry-after"]


def test_key_changes_reach_a_running_gateway(gateway, keys) -> None:
    secret = make_api_keys(gateway, {"late": {}})["late"]
    assert wait_for_status(gateway, secret, 200) == 200  # created by another process
    gateway.manage("shell", "-c", "from gateway.keys.models import ApiKey; "
                   "k = ApiKey.objects.get(name='late'); k.enabled = False; k.save()")  # fmt: skip
    assert wait_for_status(gateway, secret, 401) == 401


def wait_for_status(gateway: LiveServer, secret: str, status: int) -> int:
    deadline = time.monotonic() + 5
    while True:
        got = httpx.get(f"{gateway.url}/v1/models", headers=bearer(secret)).status_code
        if got == status or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_limits_hold_across_two_gateway_processes_through_redis(
    tmp_path: Path, redis_url: str
) -> None:
    env = server_env(tmp_path, GATEWAY_REQUIRE_API_KEYS="1", REDIS_URL=redis_url)
    first = LiveServer(data_dir=tmp_path, env=env)
    first.prepare(demo=True)
    made = make_api_keys(first, {"shared-rpm": {"requests_per_minute": 3},
                                 "shared-tpm": {"tokens_per_minute": 5}})  # fmt: skip
    second = LiveServer(data_dir=tmp_path, env=env)  # same database, another process
    try:
        start_together(first, second)

        def chat(server: LiveServer, secret: str) -> httpx.Response:
            body = {"model": "demo", "messages": HI, "max_tokens": 4}
            return httpx.post(f"{server.url}/v1/chat/completions", json=body,
                              headers=bearer(secret), timeout=30)  # fmt: skip

        rpm = made["shared-rpm"]
        assert [chat(s, rpm).status_code for s in (first, first, second)] == [200, 200, 200]
        for server in (second, first):
            refused = chat(server, rpm)
            assert_error(refused, "openai", 429, "rate_limit_error")
            retry_after(refused)

        tpm = made["shared-tpm"]
        assert chat(first, tpm).status_code == 200
        # The tokens reach Redis right after the answer: until then the second
        # process lists models (which spends nothing) for this key.
        assert wait_for_status(second, tpm, 429) == 429
        refused = chat(second, tpm)
        assert_error(refused, "openai", 429, "rate_limit_error")
        assert "tokens per minute" in refused.json()["error"]["message"]
    finally:
        first.stop()
        second.stop()


def test_serve_creates_a_local_key_once_and_prints_it(tmp_path: Path) -> None:
    env = server_env(tmp_path, GATEWAY_REQUIRE_API_KEYS="1")
    TEMPLATES.copy("migrated", tmp_path)  # what serve's migrate makes, without the wait
    run = [sys.executable, "manage.py", "serve", "--dry-run", "--no-demo", "--port", "8124"]
    first = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, check=True,
                           timeout=300).stdout  # fmt: skip
    secret = re.search(r"gw-[A-Za-z0-9_-]{43}", first)
    assert secret is not None, first
    key = secret.group(0)
    assert f'-H "Authorization: Bearer {key}"' in first
    assert f'OpenAI(base_url="http://127.0.0.1:8124/v1", api_key="{key}")' in first
    assert f'Anthropic(base_url="http://127.0.0.1:8124", api_key="{key}")' in first
    with sqlite3.connect(tmp_path / "gateway.sqlite3") as db:
        rows = db.execute("SELECT name, key_hash, prefix FROM routing_apikey").fetchall()
    assert rows == [("local", hashlib.sha256(key.encode()).hexdigest(), key[:11])]
    again = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, check=True,
                           timeout=300).stdout  # fmt: skip
    assert key not in again
    assert "$GATEWAY_API_KEY" in again and "create_api_key" in again
