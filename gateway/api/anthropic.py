"""Anthropic-protocol endpoints: thin views over routing and `inference.wire.anthropic`."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from ninja import Router

from inference.wire import anthropic as wire
from inference.wire.common import decode_json
from routing import failover

from .. import context
from ..streaming import answer
from .responses import json_response

router = Router(tags=["anthropic"])


def _body(schema: type[wire.CountTokensRequest]) -> dict[str, object]:
    content = {"application/json": {"schema": schema.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


@router.post("/messages", openapi_extra=_body(wire.MessagesRequest))
async def messages(request: HttpRequest) -> HttpResponseBase:
    ctx = await context.begin(request, "anthropic", "messages")
    chat = wire.parse_request(decode_json(request.body))
    chat.headers = wire.forwarded_headers(request.headers)
    await context.admit(ctx, chat.model, stream=chat.stream)
    return await answer(ctx, chat, wire.message_body, wire.StreamEncoder)


@router.post("/messages/count_tokens", openapi_extra=_body(wire.CountTokensRequest))
async def count_tokens(request: HttpRequest) -> HttpResponse:
    """Counted by the route's first target that can answer, as a request would be sent.

    A local model counts exactly (its tokenizer and chat template, tools
    included); an Anthropic provider is asked through its own count_tokens
    endpoint; an OpenAI-compatible provider (no such endpoint), or a route
    whose every target failed, gets `inference.estimate.estimate_tokens`. The
    X-Gateway-Count header says which ("exact" or "estimate").
    """
    ctx = await context.begin(request, "anthropic", "messages.count_tokens")
    chat = wire.parse_count_request(decode_json(request.body))
    chat.headers = wire.forwarded_headers(request.headers)
    await context.admit(ctx, chat.model, stream=False)
    count, how, served = await failover.count_tokens(chat)
    ctx.served, ctx.input_tokens = served, count
    context.finish(ctx)
    headers = {**served.headers(), "X-Gateway-Count": how}
    return json_response(wire.count_tokens_body(count), headers=headers)
