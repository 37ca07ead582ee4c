"""OpenAI-protocol endpoints: thin views over the routing service."""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse
from ninja import Router

from inference import jsonio
from inference.errors import InvalidRequest

from .. import context
from ..protocols import openai as wire
from ..streaming import answer

router = Router(tags=["openai"])

_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": wire.ChatCompletionRequest.model_json_schema()}},
    }
}


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = HttpResponse(jsonio.dumps(body), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def parse_json(request: HttpRequest) -> object:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


@router.post("/chat/completions", openapi_extra=_CHAT_BODY)
async def chat_completions(request: HttpRequest) -> HttpResponse:
    ctx = await context.begin(request, "openai", "chat.completions")
    chat, include_usage = wire.parse_request(parse_json(request))
    await context.admit(ctx, chat.model, stream=chat.stream)
    return await answer(
        ctx,
        chat,
        wire.completion_body,
        lambda model: wire.StreamEncoder(model, include_usage),
    )
