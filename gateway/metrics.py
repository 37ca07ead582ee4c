"""Prometheus metrics: `GET /metrics` in the text exposition format.

Counters and histograms are updated by a request-context listener (a few dict
lookups per request); breaker states and the local engine's gauges are read
when Prometheus scrapes. The registry is our own, so nothing a library
registers globally leaks into the exposition.

Access: with GATEWAY_METRICS_TOKEN set, a scrape must send
`Authorization: Bearer <token>`; without it, only loopback clients may scrape.
Behind a reverse proxy on the same host every client looks like loopback, so
set a token there.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Iterator
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from inference.local.chunks import EngineStats
from routing.backends import get_engine

from . import monitor
from .context import RequestContext
from .keys.auth import bearer_token

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

_REQUEST_LABELS = ["protocol", "endpoint", "model", "backend", "status", "stream"]
_TOKEN_LABELS = ["protocol", "model", "backend"]

REQUESTS = Counter(
    "gateway_requests",
    "API requests finished, by who served them and how they ended.",
    _REQUEST_LABELS,
    registry=REGISTRY,
)
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time from the request's arrival to its last byte.",
    ["protocol", "endpoint", "model", "backend", "stream"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from the request's arrival to its first content (streamed requests).",
    _TOKEN_LABELS,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
INPUT_TOKENS = Counter(
    "gateway_input_tokens", "Prompt tokens, as reported by the backend.", _TOKEN_LABELS,
    registry=REGISTRY,
)  # fmt: skip
OUTPUT_TOKENS = Counter(
    "gateway_output_tokens", "Generated tokens, as reported by the backend.", _TOKEN_LABELS,
    registry=REGISTRY,
)  # fmt: skip
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors",
    "Failed or skipped attempts on a backend (breaker_open, an error code or HTTP status).",
    ["backend", "outcome"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "gateway_fallbacks",
    "Changes of target (provider and model, or local model) in a request's chain walk, "
    "continuations included.",
    ["model"],
    registry=REGISTRY,
)
CONTINUATIONS = Counter(
    "gateway_continuations",
    "Streams broken off mid-answer and finished by another target.",
    ["model"],
    registry=REGISTRY,
)
EDGE_REFUSALS = Counter(
    "gateway_edge_refusals",
    "Requests and connections refused at the edge, before routing (gateway.edge).",
    ["reason", "status"],
    registry=REGISTRY,
)


class BoundedLabel:
    """Label values as they come, until `limit` distinct ones; then "other".

    Model names are chosen by clients and a wildcard route accepts any of them:
    an unbounded label would grow Prometheus' series without limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit or len(value) > 200:
                return "other"
            self._seen.add(value)
            return value


_models = BoundedLabel(settings.GATEWAY_METRICS_MAX_MODELS)
_outcomes = BoundedLabel(50)


def model_label(ctx: RequestContext) -> str:
    # Only names that resolved to a route (a chain was walked): a typo or a
    # probe for model names stays "other".
    if not ctx.requested_model or ctx.served is None or not ctx.served.attempts:
        return "other"
    return _models(ctx.requested_model)


_children: dict[tuple[object, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """metric.labels(*labels), remembered: prometheus_client takes a lock and
    checks the labels on every call, for a few series that repeat forever. The
    label values are bounded (BoundedLabel), so this is too."""
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def record(ctx: RequestContext) -> None:
    """The request-context listener: counts one finished request."""
    served = ctx.served
    backend = (served.backend if served is not None else "") or "none"
    model = model_label(ctx)
    stream = "true" if ctx.stream else "false"
    child(REQUESTS, ctx.protocol, ctx.endpoint, model, backend, str(ctx.status), stream).inc()
    child(LATENCY, ctx.protocol, ctx.endpoint, model, backend, stream).observe(
        ctx.latency_ms / 1000
    )
    if ctx.ttft_ms is not None:
        child(TTFT, ctx.protocol, model, backend).observe(ctx.ttft_ms / 1000)
    if ctx.input_tokens:
        child(INPUT_TOKENS, ctx.protocol, model, backend).inc(ctx.input_tokens)
    if ctx.output_tokens:
        child(OUTPUT_TOKENS, ctx.protocol, model, backend).inc(ctx.output_tokens)
    if served is None:
        return
    for attempt in served.attempts:
        if attempt.outcome != "ok":
            child(UPSTREAM_ERRORS, attempt.backend, _outcomes(outcome_label(attempt.outcome))).inc()
    if served.fallbacks:
        child(FALLBACKS, model).inc(served.fallbacks)
    if served.continuations:
        child(CONTINUATIONS, model).inc(served.continuations)
    if served.malformed_events:
        child(UPSTREAM_ERRORS, served.backend, "malformed_event").inc(served.malformed_events)


def outcome_label(outcome: str) -> str:
    return "breaker_open" if outcome.startswith("skipped") else outcome


class LiveCollector(Collector):
    """Read at scrape time: breaker states and the local engine's load."""

    def collect(self) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "gateway_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open.",
            labels=["backend", "kind"],
        )
        try:
            for state in monitor.backend_states():
                value = monitor.BREAKER_VALUES.get(state.breaker, 2)
                breaker.add_metric([state.name, state.kind], value)
        except Exception:  # Redis down: the rest of the scrape is still worth having
            logger.warning("metrics: breaker states unavailable", exc_info=True)
        yield breaker
        stats = get_engine().stats()
        for name, doc, value in (
            ("queued_requests", "Requests waiting for a batch slot.", stats.queued_requests),
            ("active_sequences", "Sequences being decoded.", stats.active_sequences),
            ("resident_models", "Models loaded in memory.", len(stats.resident_models)),
            ("loading_models", "Models being loaded.", len(stats.loading_models)),
        ):
            yield GaugeMetricFamily(f"gateway_engine_{name}", f"Local engine: {doc}", value=value)
        yield from prompt_cache_metrics(stats)


def prompt_cache_metrics(stats: EngineStats) -> Iterator[Metric]:
    """The local engine's prompt cache, all models of this process together."""
    for name, doc, total in (
        ("lookups", "Prompts looked up in the cache.", stats.prompt_cache_lookups),
        ("hits", "Prompts that started from a cached prefix.", stats.prompt_cache_hits),
        ("tokens_reused", "Prompt tokens read from the cache.", stats.prompt_cache_tokens_reused),
    ):
        yield CounterMetricFamily(f"gateway_prompt_cache_{name}", doc, value=total)
    yield GaugeMetricFamily(
        "gateway_prompt_cache_bytes", "Bytes of KV cache held.", value=stats.prompt_cache_bytes
    )
    yield GaugeMetricFamily(
        "gateway_prompt_cache_max_bytes",
        "The cap (GATEWAY_PROMPT_CACHE_BYTES).",
        value=stats.prompt_cache_max_bytes,
    )


REGISTRY.register(LiveCollector())


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def refusal(request: HttpRequest) -> HttpResponse | None:
    """Why this scrape is refused, or None to let it through."""
    token: str = settings.GATEWAY_METRICS_TOKEN
    if token:
        if hmac.compare_digest(bearer_token(request).encode(), token.encode()):
            return None
        response = HttpResponse("a valid metrics token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _is_loopback(request.META.get("REMOTE_ADDR", "")):
        return None
    return HttpResponse(
        "metrics are served to loopback clients only; set GATEWAY_METRICS_TOKEN\n", status=403
    )


@require_http_methods(["GET", "HEAD"])
async def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        refused["Content-Type"] = "text/plain; charset=utf-8"
        return refused
    # Scrape-time reads may touch the database and Redis: not on the event loop.
    body = await database_sync_to_async(generate_latest)(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
