"""The live dashboard's WebSocket (channels' test communicator) and its admin page."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from gateway import context, dashboard
from gateway.context import RequestContext
from routing.breakers import BreakerSettings, breakers
from routing.failover import Attempt, Served

from .conftest import redis_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_layer() -> Iterator[None]:
    # The in-memory layer's queues belong to the loop that made them: one per test.
    channel_layers.backends.clear()
    yield
    dashboard.stop()
    channel_layers.backends.clear()


@pytest.fixture(params=["in-memory", "redis"])
def layer(request: pytest.FixtureRequest, tmp_path: Any, settings: Any) -> Iterator[str]:
    """Both channel layers the gateway can run with (Redis: as with REDIS_URL set)."""
    if request.param == "in-memory":
        yield request.param
        return
    with redis_server(tmp_path) as url:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": "gateway:channels"},
            }
        }
        yield request.param


def session_cookie(*, staff: bool, name: str = "watcher") -> str:
    user = get_user_model().objects.create_user(name, password="pw-123456789", is_staff=staff)
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def sync(fn: Any, **kwargs: Any) -> Any:
    # Closes the worker thread's connection after use, as the consumer's own calls do.
    return await database_sync_to_async(fn)(**kwargs)


async def open_socket(
    cookie: str | None, origin: str = "http://127.0.0.1:8000"
) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(
        dashboard.websocket_application(), f"/{dashboard.WS_PATH}", headers=headers
    )
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def next_of(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    for _ in range(20):
        message = await communicator.receive_json_from(timeout=3)
        if message["kind"] == kind:
            return message
    raise AssertionError(f"no {kind!r} message")


def finished_request() -> RequestContext:
    ctx = RequestContext(protocol="anthropic", endpoint="messages")
    ctx.requested_model, ctx.stream = "claude-ish", True
    ctx.served = Served(
        "local:demo",
        "demo",
        [Attempt("cloud-a", "claude-ish", "503", 20.0), Attempt("local:demo", "demo", "ok", 9.0)],
    )
    ctx.input_tokens, ctx.output_tokens = 11, 7
    return ctx


async def test_staff_sees_a_finished_request_and_live_stats(layer: str, monkeypatch: Any) -> None:
    expected = {"redis": "RedisChannelLayer", "in-memory": "InMemoryChannelLayer"}[layer]
    assert type(channel_layers["default"]).__name__ == expected
    cookie = await sync(session_cookie, staff=True)
    communicator, connected = await open_socket(cookie)
    assert connected
    hello = await next_of(communicator, "hello")
    assert isinstance(hello["recent"], list)
    assert hello["stats"]["source"] == dashboard.SOURCE

    for name in ("cloud-a", "local:demo"):  # as failover would have made them
        breakers().breaker(name, BreakerSettings())
    # Exactly as a view ends a request: through the context's listeners.
    monkeypatch.setattr(context, "_listeners", [dashboard.publish])
    context.finish(finished_request())
    row = (await next_of(communicator, "requests"))["rows"][-1]
    assert row["model"] == "claude-ish" and row["protocol"] == "anthropic"
    assert row["backend"] == "local:demo" and row["fallbacks"] == 1
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == (200, 11, 7)
    assert row["stream"] is True and row["latency_ms"] >= 0

    stats = (await next_of(communicator, "stats"))["stats"]  # the 1 s tick
    assert stats["rps"] > 0 and stats["output_tps"] > 0
    assert {b["name"]: b["breaker"] for b in stats["backends"]} == {
        "cloud-a": "closed",
        "local:demo": "closed",
    }
    assert stats["outcomes"]["cloud-a"]["outcome"] == "503"
    assert stats["outcomes"]["local:demo"]["outcome"] == "ok"
    # The figures behind the page's prompt-cache hit rate.
    engine = stats["engine"]
    assert engine["prompt_cache_hits"] <= engine["prompt_cache_lookups"]
    assert engine["prompt_cache_tokens_reused"] >= 0
    await communicator.disconnect()
    dashboard.stop()
    if layer == "redis":
        await channel_layers["default"].close_pools()


async def test_anonymous_and_non_staff_are_refused() -> None:
    _, connected = await open_socket(None)
    assert not connected
    cookie = await sync(session_cookie, staff=False, name="not-staff")
    _, connected = await open_socket(cookie)
    assert not connected


async def test_foreign_origin_is_refused() -> None:
    cookie = await sync(session_cookie, staff=True)
    _, connected = await open_socket(cookie, origin="http://evil.example")
    assert not connected


def test_dashboard_page_is_staff_only_and_linked(admin_client: Client) -> None:
    page = admin_client.get("/admin/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-ws-path="/{dashboard.WS_PATH}"' in html
    assert 'src="http' not in html and 'src="//' not in html  # nothing from a CDN
    assert 'href="/admin/dashboard/"' in admin_client.get("/admin/").content.decode()
    anonymous = Client().get("/admin/dashboard/")
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


async def test_an_unreachable_redis_costs_requests_nothing(settings: Any, caplog: Any) -> None:
    from .conftest import free_port

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }
    for _ in range(3):
        dashboard.publish(finished_request())  # returns at once, whatever Redis does
    flush = dashboard._tasks["flush"]
    await asyncio.wait_for(asyncio.shield(flush), 10)
    assert not dashboard._outbox  # what could not be sent is dropped, not kept
    warnings = [r for r in caplog.records if "cannot publish rows" in r.getMessage()]
    assert len(warnings) == 1
