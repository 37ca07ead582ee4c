"""OpenAI-protocol endpoints: thin views over the routing service and `inference.wire.openai`."""

from __future__ import annotations

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from ninja import Router

from inference.wire import openai as wire
from inference.wire.common import decode_json

from .. import context
from ..streaming import answer

router = Router(tags=["openai"])

_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": wire.ChatCompletionRequest.model_json_schema()}},
    }
}


@router.post("/chat/completions", openapi_extra=_CHAT_BODY)
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    ctx = await context.begin(request, "openai", "chat.completions")
    chat, include_usage = wire.parse_request(decode_json(request.body))
    await context.admit(ctx, chat.model, stream=chat.stream)
    return await answer(
        ctx,
        chat,
        wire.completion_body,
        lambda model: wire.StreamEncoder(model, include_usage),
    )
