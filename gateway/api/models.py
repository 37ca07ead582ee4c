"""GET /v1/models: in OpenAI's format, or Anthropic's when the client sends anthropic-version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from inference.errors import InvalidRequest, ModelNotFound
from inference.types import MAX_MODEL_NAME
from routing import selectors

from .. import auth, context
from ..errors import request_protocol
from .responses import json_response

router = Router(tags=["models"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _created(snapshot: selectors.Snapshot, name: str) -> tuple[datetime, str]:
    local = snapshot.local_models.get(name)
    if local is not None:
        return local.created_at, "local"
    return _EPOCH, "gateway"  # a routed name has no creation date of its own


def _card(snapshot: selectors.Snapshot, name: str, anthropic: bool) -> dict[str, Any]:
    created, owner = _created(snapshot, name)
    if anthropic:
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    return {"id": name, "object": "model", "created": int(created.timestamp()), "owned_by": owner}


@router.get("/models")
async def list_models(request: HttpRequest) -> HttpResponse:
    protocol = request_protocol(request)
    ctx = await context.begin(request, protocol, "models.list")
    await auth.within_limits(ctx, count=False)
    snapshot = await selectors.asnapshot()
    # A key limited to some models is shown only those.
    names = [n for n in snapshot.table.advertised_models() if auth.allowed(ctx, n)]
    if protocol != "anthropic":
        body = {"object": "list", "data": [_card(snapshot, n, False) for n in names]}
    else:
        page, has_more = _page(request, names)
        body = {
            "data": [_card(snapshot, n, True) for n in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    context.finish(ctx)
    return json_response(body)


def _page(request: HttpRequest, names: list[str]) -> tuple[list[str], bool]:
    """Anthropic's cursor pagination (limit, after_id, before_id) over the sorted names."""
    raw = request.GET.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000", param="limit")
    limit = int(raw)
    after, before = request.GET.get("after_id"), request.GET.get("before_id")
    if before:
        names = [n for n in names if n < before]
        return names[-limit:], len(names) > limit
    if after:
        names = [n for n in names if n > after]
    return names[:limit], len(names) > limit


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
    return json_response(_card(snapshot, model_id, protocol == "anthropic"))
