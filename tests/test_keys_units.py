"""Client API keys in process: cached lookups, auth rules, limits, the admin, the command."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import Client, RequestFactory
from django.utils import timezone

from gateway.context import RequestContext
from gateway.keys import auth
from gateway.keys import selectors as keyring
from gateway.keys.models import ApiKey, ApiKeyState
from gateway.keys.ratelimit import MemoryLimiter, RedisLimiter
from gateway.keys.services import create_api_key
from gateway.usage.models import RequestLog
from inference.errors import AuthenticationFailed, PermissionDenied, RateLimited

from .conftest import redis_server

SECRET = re.compile(r"gw-[A-Za-z0-9_-]{43}")


def request_with(**headers: str) -> Any:
    return RequestFactory().post("/v1/chat/completions", headers=headers)


def ctx() -> RequestContext:
    return RequestContext(protocol="openai", endpoint="chat.completions")


@pytest.mark.django_db
def test_only_a_hash_of_the_secret_is_stored() -> None:
    key, secret = create_api_key("svc", allowed_models=["demo"])
    assert SECRET.fullmatch(secret)
    key.refresh_from_db()
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.prefix == secret[:11]
    stored = [str(v) for v in ApiKey.objects.values_list(flat=False).get(pk=key.pk)]
    assert not any(secret in v for v in stored)
    assert secret not in str(key) and secret not in repr(key)


@pytest.mark.django_db
def test_key_lookups_are_cached(django_assert_num_queries: Any) -> None:
    _, secret = create_api_key("cached")
    assert keyring.find(secret) is not None  # loads the keyring
    with django_assert_num_queries(0):
        for _ in range(3):
            assert keyring.find(secret) is not None
            assert keyring.find("gw-unknown") is None  # unknown keys too


@pytest.mark.django_db(transaction=True)
async def test_an_authenticated_request_makes_no_query_once_cached(
    django_assert_num_queries: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.GATEWAY_REQUIRE_API_KEYS = True
    key, secret = await sync_to_async(create_api_key)("async", requests_per_minute=100)
    first = ctx()
    await auth.authenticate(request_with(authorization=f"Bearer {secret}"), first)
    assert first.api_key.id == key.pk

    def no_database() -> None:
        raise AssertionError("the keyring was read from the database again")

    # Neither a query on this thread nor a hop to a thread that would query. (The
    # query counter opens this thread's connection, which Django refuses on a loop.)
    monkeypatch.setattr(keyring._cache, "get", no_database)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    with django_assert_num_queries(0):
        for headers in ({"authorization": f"Bearer {secret}"}, {"x_api_key": secret}):
            second = ctx()
            await auth.authenticate(request_with(**headers), second)
            await auth.admit(second, "demo")
            assert second.api_key.id == key.pk


@pytest.mark.django_db(transaction=True)
async def test_auth_rules(settings: Any) -> None:
    settings.GATEWAY_REQUIRE_API_KEYS = True
    _, ok = await sync_to_async(create_api_key)("ok", allowed_models=["gpt-*"])
    disabled, off = await sync_to_async(create_api_key)("off")
    disabled.enabled = False
    await disabled.asave()
    _, old = await sync_to_async(create_api_key)(
        "old", expires_at=timezone.now() - timedelta(seconds=1)
    )
    for headers, says in (
        ({}, "Missing"),
        ({"authorization": "Bearer gw-nope"}, "Invalid"),
        ({"authorization": f"Basic {ok}"}, "Missing"),
        ({"x_api_key": off}, "disabled"),
        ({"x_api_key": old}, "expired"),
    ):
        with pytest.raises(AuthenticationFailed, match=says):
            await auth.authenticate(request_with(**headers), ctx())
    allowed = ctx()
    await auth.authenticate(request_with(authorization=f"bearer {ok}"), allowed)
    await auth.admit(allowed, "gpt-4o")
    with pytest.raises(PermissionDenied):
        await auth.admit(allowed, "claude-3")

    # Keys optional: no key, or someone else's, is anonymous; a revoked key is still refused.
    settings.GATEWAY_REQUIRE_API_KEYS = False
    anonymous = ctx()
    await auth.authenticate(request_with(authorization="Bearer sk-dummy"), anonymous)
    await auth.admit(anonymous, "anything")
    assert anonymous.api_key is None
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(request_with(x_api_key=off), ctx())


async def test_memory_limiter_windows() -> None:
    now = [1000.0]
    limiter = MemoryLimiter(clock=lambda: now[0])
    assert await limiter.admit(1, 2, None) is None
    now[0] += 20
    assert await limiter.admit(1, 2, None) is None
    refusal = await limiter.admit(1, 2, None)
    assert refusal is not None and refusal.reason == "requests"
    assert refusal.retry_after == pytest.approx(40)  # the window started with the first request
    assert await limiter.admit(2, 2, None) is None  # other keys count on their own
    now[0] += 41
    assert await limiter.admit(1, 2, None) is None  # a new window

    assert await limiter.admit(3, None, 100) is None
    limiter.charge(3, 60)
    assert await limiter.admit(3, None, 100) is None
    limiter.charge(3, 60)
    refusal = await limiter.admit(3, None, 100)
    assert refusal is not None and refusal.reason == "tokens" and refusal.limit == 100


@pytest.mark.django_db(transaction=True)
async def test_rate_limited_error_carries_retry_after(settings: Any) -> None:
    settings.GATEWAY_REQUIRE_API_KEYS = True
    _, secret = await sync_to_async(create_api_key)("one", requests_per_minute=1)
    first, second = ctx(), ctx()
    for each in (first, second):
        await auth.authenticate(request_with(x_api_key=secret), each)
    await auth.admit(first, "demo")
    with pytest.raises(RateLimited) as info:
        await auth.admit(second, "demo")
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60


@pytest.mark.django_db
def test_create_api_key_command() -> None:
    out = io.StringIO()
    call_command("create_api_key", "ci", "--models", "gpt-*", "demo", "--rpm", "10",
                 "--tpm", "5000", "--expires-days", "30", stdout=out)  # fmt: skip
    secret = out.getvalue().strip().splitlines()[-1]
    assert SECRET.fullmatch(secret)
    key = ApiKey.objects.get(name="ci")
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.allowed_models == ["gpt-*", "demo"]
    assert (key.requests_per_minute, key.tokens_per_minute) == (10, 5000)
    assert key.expires_at is not None
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert out.getvalue().count(secret) == 1
    with pytest.raises(CommandError, match="pattern"):
        call_command("create_api_key", "bad", "--models", "[oops", stdout=io.StringIO())


@pytest.mark.django_db
def test_admin_shows_the_secret_once_and_never_again(
    admin_client: Client, caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    before = ApiKeyState.current()
    with django_capture_on_commit_callbacks(execute=True):
        created = admin_client.post(
            "/admin/keys/apikey/add/",
            {"name": "web", "enabled": "on", "models_text": "gpt-*\nclaude-*, demo",
             "requests_per_minute": "60", "tokens_per_minute": ""},
        )  # fmt: skip
    key = ApiKey.objects.get(name="web")
    # POST-redirect-GET: the page that shows the secret is a GET of its own.
    assert created.status_code == 302, created.content.decode()[:2000]
    assert created["Location"] == f"/admin/keys/apikey/{key.pk}/created/"
    shown = admin_client.get(created["Location"])
    assert "no-store" in shown["Cache-Control"]
    page = shown.content.decode()
    match = SECRET.search(page)
    assert match is not None
    secret = match.group(0)
    assert "Copy this key now" in page
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.allowed_models == ["gpt-*", "claude-*", "demo"]
    assert key.requests_per_minute == 60 and key.tokens_per_minute is None
    assert ApiKeyState.current() > before  # other processes will drop their cached keys

    RequestLog.objects.create(created_at=timezone.now(), api_key=key, protocol="openai",
                              endpoint="chat.completions", status=200, latency_ms=1.0)  # fmt: skip
    later = [
        "/admin/keys/apikey/",
        f"/admin/keys/apikey/{key.pk}/change/",
        f"/admin/keys/apikey/{key.pk}/history/",
        f"/admin/keys/apikey/{key.pk}/delete/",
        "/admin/usage/requestlog/",
        "/admin/usage/requestlog/usage/",
        "/admin/",
    ]
    for url in later:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert secret not in response.content.decode(), url
        assert key.key_hash not in response.content.decode(), url
    changelist = admin_client.get("/admin/keys/apikey/").content.decode()
    assert key.prefix in changelist and "gpt-*, claude-*, demo" in changelist
    assert secret not in caplog.text
    assert secret not in str(key) and secret not in repr(key)


@pytest.mark.django_db
def test_admin_rejects_bad_patterns_and_disables_keys(
    admin_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    bad = admin_client.post("/admin/keys/apikey/add/", {"name": "x", "models_text": "gpt-[4"})
    assert bad.status_code == 200 and "gpt-[4" in bad.content.decode()
    assert not ApiKey.objects.exists()
    key, secret = create_api_key("to-disable")
    assert keyring.find(secret) is not None
    before = ApiKeyState.current()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/keys/apikey/",
            {"action": "disable_keys", "_selected_action": [key.pk]},
        )
    assert response.status_code == 302
    key.refresh_from_db()
    assert not key.enabled
    assert ApiKeyState.current() > before
    found = keyring.find(secret)
    assert found is not None and not found.enabled  # the cache saw the bulk update


async def test_redis_limiter_counts_in_redis(tmp_path: Any) -> None:
    with redis_server(tmp_path) as url:
        first, second = RedisLimiter(url), RedisLimiter(url)  # two gateway processes
        assert await first.admit(7, 2, 10) is None
        assert await second.admit(7, 2, 10) is None
        refusal = await first.admit(7, 2, 10)
        assert refusal is not None and refusal.reason == "requests"
        assert 55 < refusal.retry_after <= 60
        first.charge(8, 10)  # from a finish listener: sent by a task on this loop
        await first.aclose()
        refusal = await second.admit(8, None, 10)
        assert refusal is not None and refusal.reason == "tokens"
        assert await second.admit(9, None, 10) is None
        await second.aclose()


async def test_redis_limiter_lets_requests_through_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")  # nothing listens there
    assert await limiter.admit(1, 1, 1) is None
    assert await limiter.admit(1, 1, 1) is None
    assert "rate limits not enforced" in caplog.text
