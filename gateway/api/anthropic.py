"""Anthropic-protocol endpoints: thin views over the routing service."""

from __future__ import annotations

import json
import math
from dataclasses import replace

from django.http import HttpRequest, HttpResponse
from ninja import Router

from inference.cloud.anthropic import AnthropicBackend
from inference.local.backend import LocalBackend
from inference.types import (
    ChatRequest,
    ImagePart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)
from routing import failover
from routing.backends import backend_for

from .. import context
from ..protocols import anthropic as wire
from ..schemas.anthropic import CountTokensRequest
from ..streaming import answer
from .openai import json_response, parse_json

router = Router(tags=["anthropic"])


def _body(schema: type[CountTokensRequest]) -> dict[str, object]:
    content = {"application/json": {"schema": schema.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


@router.post("/messages", openapi_extra=_body(wire.MessagesRequest))
async def messages(request: HttpRequest) -> HttpResponse:
    ctx = await context.begin(request, "anthropic", "messages")
    chat = wire.parse_request(parse_json(request))
    await context.admit(ctx, chat.model, stream=chat.stream)
    return await answer(ctx, chat, wire.message_body, wire.StreamEncoder)


@router.post("/messages/count_tokens", openapi_extra=_body(CountTokensRequest))
async def count_tokens(request: HttpRequest) -> HttpResponse:
    """Counted by the route's primary target, which is what a request would be sent to.

    A local model counts exactly (its tokenizer and chat template, tools
    included); an Anthropic provider is asked through its own count_tokens
    endpoint; anything else gets `estimate_tokens`. The X-Gateway-Count header
    says which ("exact" or "estimate").
    """
    ctx = await context.begin(request, "anthropic", "messages.count_tokens")
    chat = wire.parse_count_request(parse_json(request))
    await context.admit(ctx, chat.model, stream=False)
    route, snapshot = await failover.route_for(chat.model)
    hop = route.chain[0]
    backend = backend_for(hop, snapshot)
    chat = replace(chat, model=hop.model)
    if isinstance(backend, LocalBackend | AnthropicBackend):
        count, how = await backend.count_tokens(chat), "exact"
    else:
        count, how = estimate_tokens(chat), "estimate"
    headers = {"X-Gateway-Backend": backend.name, "X-Gateway-Model": hop.model}
    ctx.input_tokens = count
    context.finish(ctx)
    return json_response({"input_tokens": count}, headers={**headers, "X-Gateway-Count": how})


# What Anthropic charges for an image of about 1.15 megapixels, the size it
# scales larger images down to; the gateway never decodes images to know better.
IMAGE_TOKENS = 1600


def estimate_tokens(request: ChatRequest) -> int:
    """An estimate for backends that cannot count: ceil(characters / 4).

    Characters counted: every text of every message (system prompt, text,
    thinking, text inside tool results), each tool call's name and JSON
    arguments, and each tool definition (name, description, input schema) as
    compact JSON. Each image adds a flat IMAGE_TOKENS. Four characters per
    token is the usual rule of thumb for English under BPE tokenizers: it
    errs high for code-light prose and low for CJK text, and ignores the
    few tokens of per-message framing a chat template adds.
    """
    chars = 0
    images = 0
    for message in request.messages:
        for part in message.content:
            if isinstance(part, TextPart | ThinkingPart):
                chars += len(part.text)
            elif isinstance(part, ToolCallPart):
                chars += len(part.name) + len(part.arguments)
            elif isinstance(part, ToolResultPart):
                for inner in part.content:
                    if isinstance(inner, TextPart):
                        chars += len(inner.text)
                    else:
                        images += 1
            elif isinstance(part, ImagePart):
                images += 1
    for tool in request.tools:
        spec = {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
        chars += len(json.dumps(spec, ensure_ascii=False, separators=(",", ":")))
    return math.ceil(chars / 4) + images * IMAGE_TOKENS
