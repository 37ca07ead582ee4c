"""OpenAI-protocol endpoints: thin views over the routing service."""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse
from ninja import Router

from inference.errors import InvalidRequest, ModelNotFound
from routing import failover, selectors

from ..protocols import openai as wire
from ..streaming import sse_response

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
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
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
    chat, include_usage = wire.parse_request(parse_json(request))
    if not chat.stream:
        result, served = await failover.complete(chat)
        body = wire.completion_body(result, served.model)
        return json_response(body, headers=served.headers())
    held, events, served = await failover.stream(chat)
    encoder = wire.StreamEncoder(served.model, include_usage)
    return sse_response(held, events, encoder, served.backend, served.headers())


def _model_card(name: str, created: float, owner: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": owner}


def _card(snapshot: selectors.Snapshot, name: str) -> dict[str, object]:
    local = snapshot.local_models.get(name)
    if local is not None:
        return _model_card(name, local.created_at.timestamp(), "local")
    return _model_card(name, 0, "gateway")


@router.get("/models")
async def list_models(request: HttpRequest) -> HttpResponse:
    snapshot = await selectors.asnapshot()
    data = [_card(snapshot, name) for name in snapshot.table.advertised_models()]
    return json_response({"object": "list", "data": data})


@router.get("/models/{model_id}")
async def get_model(request: HttpRequest, model_id: str) -> HttpResponse:
    snapshot = await selectors.asnapshot()
    if snapshot.table.resolve(model_id) is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist.", param="model")
    return json_response(_card(snapshot, model_id))
