"""GET /v1/models: in OpenAI's format, or Anthropic's when the client sends
anthropic-version (the shapes: `inference.wire.<protocol>.models`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from inference.errors import InvalidRequest, ModelNotFound
from inference.types import MAX_MODEL_NAME
from inference.wire import anthropic as anthropic_wire
from inference.wire import openai as openai_wire
from routing import selectors

from .. import context
from ..errors import Protocol, request_protocol
from ..keys import auth
from .responses import json_response

router = Router(tags=["models"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _created(snapshot: selectors.Snapshot, name: str) -> tuple[datetime, str]:
    local = snapshot.local_models.get(name)
    if local is not None:
        return local.created_at, "local"
    return _EPOCH, "gateway"  # a routed name has no creation date of its own


def _card(snapshot: selectors.Snapshot, name: str, protocol: Protocol) -> dict[str, Any]:
    created, owner = _created(snapshot, name)
    if protocol == "anthropic":
        return anthropic_wire.model_card(name, created)
    return openai_wire.model_card(name, created, owner)


@router.get("/models")
async def list_models(request: HttpRequest) -> HttpResponse:
    protocol = request_protocol(request)
    ctx = await context.begin(request, protocol, "models.list")
    await auth.within_limits(ctx, count=False)
    snapshot = await selectors.asnapshot()
    # A key limited to some models is shown only those.
    names = [n for n in snapshot.table.advertised_models() if auth.allowed(ctx, n)]
    if protocol != "anthropic":
        body = openai_wire.model_list([_card(snapshot, n, protocol) for n in names])
    else:
        page, has_more = anthropic_wire.paginate(names, request.GET)
        body = anthropic_wire.model_list([_card(snapshot, n, protocol) for n in page], has_more)
    context.finish(ctx)
    return json_response(body)


@router.get("/models/{path:model_id}")  # names like org/model
async def get_model(request: HttpRequest, model_id: str) -> HttpResponse:
    protocol = request_protocol(request)
    ctx = await context.begin(request, protocol, "models.retrieve")
    if len(model_id) > MAX_MODEL_NAME:
        raise InvalidRequest(f"model names are at most {MAX_MODEL_NAME} characters", param="model")
    # Before the lookup, so a refused key learns nothing; a listing uses up no request.
    await context.admit(ctx, model_id, stream=False, count=False)
    snapshot = await selectors.asnapshot()
    if snapshot.table.resolve(model_id) is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist.", param="model")
    context.finish(ctx)
    return json_response(_card(snapshot, model_id, protocol))
