"""The admin's playground: a prompt sent through a chosen model name as a chosen
API key, its answer streamed to the page with the route taken and each attempt.

The request takes the gateway's own path (the key's models, rate limits and
budgets, routing, failover, the request log as endpoint "playground"), with the
key chosen by its id: an admin never needs, and is never shown, a key's secret.
"""

from __future__ import annotations

from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.contrib.auth.decorators import user_passes_test
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from gateway.keys.models import ApiKey
from gateway.keys.selectors import KeyRecord
from inference.errors import AuthenticationFailed, GatewayError, InvalidRequest
from inference.types import ChatRequest, Event, Finish, Message, TextDelta, TextPart
from routing import continuation, selectors

from . import context
from .costs import cost_of
from .errors import client_message
from .streaming import sse_response

MAX_TOKENS = 4096


def _staff(user: Any) -> bool:
    return bool(user.is_active and user.is_staff)


def page(request: HttpRequest) -> HttpResponse:
    """The form: model names that route (local models, exact mapping patterns), keys."""
    from django.contrib import admin

    each_context = admin.site.each_context(request)
    snapshot = selectors.snapshot()
    names = sorted(set(snapshot.local_models) | {
        m.pattern for m in snapshot.table.mappings if not any(c in m.pattern for c in "*?[")
    })  # fmt: skip
    keys = ApiKey.objects.filter(enabled=True).only("id", "name", "prefix").order_by("name")
    context_ = {**each_context, "title": "Playground", "models": names, "keys": keys}
    return TemplateResponse(request, "admin/playground.html", context_)


def _record(key_id: str) -> KeyRecord | None:
    if not key_id:
        return None
    key = ApiKey.objects.filter(pk=int(key_id)).first() if key_id.isdigit() else None
    if key is None:
        raise AuthenticationFailed("No such API key.")
    record = KeyRecord.of(key)
    if not record.enabled or record.is_expired():
        raise AuthenticationFailed(f"The API key {record.prefix}… is {key.status}.")
    return record


class _Encoder:
    """Events as the page reads them: one JSON object per SSE event."""

    def __init__(self, ctx: context.RequestContext) -> None:
        self.ctx = ctx

    def encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return _sse({"text": event.text})
        if isinstance(event, Finish):
            served = self.ctx.served
            return _sse({
                "done": event.reason, "backend": served.backend, "model": served.model,
                "attempts": served.trail, "input_tokens": event.usage.input_tokens,
                "output_tokens": event.usage.output_tokens,
                "cost": str(cost_of(self.ctx)),  # the tokens are final: as the log will say
            })  # fmt: skip
        return b""

    def error(self, error: GatewayError) -> bytes:
        return _sse({"error": client_message(error), "status": error.status})


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@user_passes_test(_staff)
@require_POST
async def stream(request: HttpRequest) -> HttpResponseBase:
    ctx = context.RequestContext(protocol="openai", endpoint="playground")
    try:
        data = orjson.loads(request.body)
        model, prompt = str(data.get("model", "")).strip(), str(data.get("prompt", ""))
        if not model or not prompt:
            raise InvalidRequest("Choose a model and write a prompt.")
        max_tokens = min(max(int(data.get("max_tokens") or 256), 1), MAX_TOKENS)
        ctx.api_key = await database_sync_to_async(_record)(str(data.get("key", "")))
        await context.admit(ctx, model, stream=True)
        chat = ChatRequest(
            model=model,
            messages=[Message(role="user", content=[TextPart(prompt)])],
            max_tokens=max_tokens,
            stream=True,
        )
        held, events, served = await continuation.stream(chat)
    except GatewayError as exc:
        ctx.fail(exc, exc.status)
        context.finish(ctx)
        body = {"error": client_message(exc), "status": exc.status}
        return JsonResponse(body, status=exc.status)
    except (ValueError, TypeError, AttributeError):
        return JsonResponse({"error": "A JSON object is expected.", "status": 400}, status=400)
    ctx.served = served
    return await sse_response(held, events, _Encoder(ctx), ctx, served.headers())
