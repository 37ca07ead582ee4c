"""The HTTP API: one NinjaAPI, errors mapped to each caller's envelope here."""

from __future__ import annotations

import logging

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError

from inference.errors import EngineError, GatewayError, InvalidRequest, ModelNotFound
from inference.wire.common import validation_message

from .. import context
from ..errors import error_response, request_protocol
from . import anthropic, health, models, openai

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="LLM gateway",
    version="1",
    docs_url=None,  # the docs page pulls assets from a CDN; the schema stays
    openapi_url="/openapi.json",
    urls_namespace="gateway-api",
)
api.add_router("/v1", openai.router)
api.add_router("/v1", anthropic.router)
api.add_router("/v1", models.router)
api.add_router("", health.router)


def _respond(request: HttpRequest, error: GatewayError) -> HttpResponse:
    """The error in the caller's envelope; the request's record is closed with it."""
    response = error_response(error, request_protocol(request))
    ctx = context.current(request)
    if ctx is not None:
        ctx.fail(error, response.status_code)
        context.finish(ctx)
    return response


@api.exception_handler(GatewayError)
def on_gateway_error(request: HttpRequest, exc: GatewayError) -> HttpResponse:
    response = _respond(request, exc)
    served = getattr(exc, "served", None)  # set when every target of a route failed
    if served is not None:
        for key, value in served.headers().items():
            if value:
                response[key] = value
    return response


@api.exception_handler(NinjaValidationError)
def on_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    message, param = validation_message(list(exc.errors))
    return _respond(request, InvalidRequest(message, param=param))


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _respond(request, ModelNotFound(str(exc) or "not found"))


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    error = GatewayError(str(exc), status=exc.status_code)
    error.kind = "invalid_request" if exc.status_code < 500 else "api_error"
    return _respond(request, error)


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    error = EngineError(f"internal error: {type(exc).__name__}")
    error.code = "internal_error"
    return _respond(request, error)
