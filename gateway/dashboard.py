"""The live dashboard: a staff-only admin page fed over a Channels WebSocket.

Every finished request is pushed to a channel-layer group by a request-context
listener; once a second each process pushes its own figures (requests and
tokens per second, engine load, breakers). With the Redis channel layer several
gateway processes feed the same group, so the page adds up the figures of every
process it has heard from recently.

The listener only appends to a bounded outbox and, if no send is in flight,
schedules one on the running loop: a slow channel layer coalesces rows into
fewer messages (or drops the oldest) instead of piling up tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from routing.backends import get_engine

from . import monitor
from .context import RequestContext
from .history import history

logger = logging.getLogger(__name__)

GROUP = "gateway.dashboard"
WS_PATH = "ws/dashboard/"
TICK_SECONDS = 1.0
WINDOW_SECONDS = 5.0  # rates are averaged over this much recent time
RECENT_ROWS = 50
HISTORY_EVERY_TICKS = 10  # the last hour's buckets travel every 10 s
SOURCE = f"{socket.gethostname()}:{os.getpid()}"


class Activity:
    """This process's recent requests, for rates and for a newly opened page."""

    def __init__(self) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ROWS)
        self.window: deque[tuple[float, int, int]] = deque()
        self.last_outcome: dict[str, tuple[str, float]] = {}  # backend -> (outcome, when)

    def note(self, ctx: RequestContext, row: dict[str, Any]) -> None:
        self.recent.append(row)
        self.window.append((time.monotonic(), ctx.input_tokens, ctx.output_tokens))
        for attempt in ctx.served.attempts if ctx.served is not None else ():
            self.last_outcome[attempt.backend] = (attempt.outcome, row["time"])
        attempts = ctx.served.attempts if ctx.served is not None else []
        history.note(attempts, row["status"], row["latency_ms"])
        self._trim()

    def clear(self) -> None:
        self.recent.clear()
        self.window.clear()
        self.last_outcome.clear()

    def rates(self) -> dict[str, float]:
        self._trim()
        requests = len(self.window)
        inputs = sum(i for _, i, _ in self.window)
        outputs = sum(o for _, _, o in self.window)
        return {
            "rps": round(requests / WINDOW_SECONDS, 2),
            "input_tps": round(inputs / WINDOW_SECONDS, 1),
            "output_tps": round(outputs / WINDOW_SECONDS, 1),
        }

    def _trim(self) -> None:
        horizon = time.monotonic() - WINDOW_SECONDS
        while self.window and self.window[0][0] < horizon:
            self.window.popleft()


activity = Activity()
_outbox: deque[dict[str, Any]] = deque(maxlen=200)
_tasks: dict[str, asyncio.Task[None]] = {}  # "flush" / "tick", on the loop that started them
_watchers = 0  # open dashboards in this process


def row_of(ctx: RequestContext) -> dict[str, Any]:
    served = ctx.served
    ttft = ctx.ttft_ms
    return {
        "time": ctx.started_at,
        "protocol": ctx.protocol,
        "endpoint": ctx.endpoint,
        "model": ctx.requested_model[:200],
        "backend": served.backend if served is not None else "",
        "served_model": served.model[:200] if served is not None else "",
        "fallbacks": served.fallbacks if served is not None else 0,
        "continuations": served.continuations if served is not None else 0,
        "served_by": " -> ".join(served.parts) if served is not None else "",
        "status": ctx.status,
        "error": ctx.error_type,
        "stream": ctx.stream,
        "input_tokens": ctx.input_tokens,
        "output_tokens": ctx.output_tokens,
        "cached_tokens": ctx.cached_tokens,
        "latency_ms": round(ctx.latency_ms, 1),
        "ttft_ms": None if ttft is None else round(ttft, 1),
        "source": SOURCE,
    }


def publish(ctx: RequestContext) -> None:
    """The request-context listener: queue the row and make sure a send is scheduled."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # finished outside a loop (a sync test): nobody to push to
        return
    row = row_of(ctx)
    activity.note(ctx, row)  # a page opened later starts from these
    if _watchers == 0 and isinstance(get_channel_layer(), InMemoryChannelLayer):
        return  # an in-process layer with no page open here: nobody to send to
    _outbox.append(row)
    _ensure(loop, "flush", _flush)
    _ensure(loop, "tick", _tick_forever)


def _ensure(loop: asyncio.AbstractEventLoop, name: str, factory: Any) -> None:
    task = _tasks.get(name)
    if task is None or task.done() or task.get_loop() is not loop:
        _tasks[name] = loop.create_task(factory(), name=f"dashboard-{name}")


async def _flush() -> None:
    layer = get_channel_layer()
    while _outbox and layer is not None:
        rows = list(_outbox)
        _outbox.clear()
        try:
            await layer.group_send(GROUP, {"type": "dashboard.requests", "rows": rows})
        except Exception as exc:  # Redis away: the dashboard misses rows, requests go on
            _trouble("rows", exc)
            return
        _trouble("rows", None)


async def _tick_forever() -> None:
    layer = get_channel_layer()
    shared = not isinstance(layer, InMemoryChannelLayer)
    ticks = 0
    while layer is not None:
        await asyncio.sleep(TICK_SECONDS)
        ticks += 1
        # In-process layer and nobody watching here: nobody can receive this.
        if not shared and _watchers == 0:
            continue
        try:
            # Breakers and the backend list cost a database and Redis read: only
            # a process with a page open sends them (breakers are shared anyway).
            every = ticks % HISTORY_EVERY_TICKS == 0
            stats = await current_stats(backends=_watchers > 0, with_history=every)
            await layer.group_send(GROUP, {"type": "dashboard.stats", "stats": stats})
        except Exception as exc:
            _trouble("stats", exc)
            continue
        _trouble("stats", None)


_failing: set[str] = set()


def _trouble(what: str, exc: Exception | None) -> None:
    # Once when it starts failing and once when it recovers, not every second.
    if exc is not None and what not in _failing:
        _failing.add(what)
        logger.warning("dashboard: cannot publish %s (until further notice): %s", what, exc)
    elif exc is None and what in _failing:
        _failing.discard(what)
        logger.info("dashboard: publishing %s again", what)


async def current_stats(*, backends: bool = True, with_history: bool = True) -> dict[str, Any]:
    # Breakers may live in Redis and the backend list in the database.
    listed = await database_sync_to_async(monitor.backend_states)() if backends else []
    engine = get_engine().stats()
    return {
        "source": SOURCE,
        **activity.rates(),
        "engine": {
            "queued_requests": engine.queued_requests,
            "active_sequences": engine.active_sequences,
            "resident_models": list(engine.resident_models),
            "loading_models": list(engine.loading_models),
            "prompt_cache_lookups": engine.prompt_cache_lookups,
            "prompt_cache_hits": engine.prompt_cache_hits,
            "prompt_cache_tokens_reused": engine.prompt_cache_tokens_reused,
        },
        "backends": [{"name": b.name, "kind": b.kind, "breaker": b.breaker} for b in listed],
        "groups": await database_sync_to_async(monitor.group_states)() if backends else [],
        # The last hour per minute (not every tick: it is the larger part).
        **({"history": history.export()} if with_history else {}),
        # What this process last saw of each backend; the page keeps the newest.
        "outcomes": {
            name: {"outcome": outcome, "time": when}
            for name, (outcome, when) in activity.last_outcome.items()
        },
    }


def stop() -> None:
    """Cancel the background sends (at shutdown, and between tests)."""
    for task in _tasks.values():
        task.cancel()
    _tasks.clear()
    _outbox.clear()
    _failing.clear()


def reset() -> None:
    """Forget this process's recent requests and its last hour (between tests;
    the background sends are stop()'s)."""
    activity.clear()
    history.clear()


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """One open dashboard page. Staff only: anyone else is refused at the handshake."""

    joined = False

    async def connect(self) -> None:
        global _watchers
        user = self.scope.get("user")
        # types-channels' lazy user declares no is_staff; the User behind it has one.
        if not (user is not None and user.is_active and user.is_staff):  # type: ignore[attr-defined]
            await self.close()  # before accept: the handshake is answered with 403
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        _watchers += 1
        await self.accept()
        _ensure(asyncio.get_running_loop(), "tick", _tick_forever)
        await self.send_json(
            {"kind": "hello", "recent": list(activity.recent), "stats": await current_stats()}
        )

    async def disconnect(self, code: int) -> None:
        global _watchers
        if self.joined:
            self.joined = False
            _watchers -= 1
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page only listens."""

    async def dashboard_requests(self, event: dict[str, Any]) -> None:
        await self.send_json({"kind": "requests", "rows": event["rows"]})

    async def dashboard_stats(self, event: dict[str, Any]) -> None:
        await self.send_json({"kind": "stats", "stats": event["stats"]})


def websocket_application() -> Any:
    """The "websocket" branch of the ASGI router: same-host origins, session auth."""
    # Channels routes with django.urls.path (its documentation's way); the stubs
    # of types-channels admit only their own route type there.
    route = path(WS_PATH, DashboardConsumer.as_asgi())  # type: ignore[arg-type]
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([route])))  # type: ignore[list-item]


def dashboard_view(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Live dashboard",
        "ws_path": f"/{WS_PATH}",
        "window_s": WINDOW_SECONDS,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
