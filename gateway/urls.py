"""The URL table: the API (ninja) first, then metrics and the admin pages
(dashboard, playground, Django's admin); unknown /v1 paths answer in the API's
error envelope."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path

from inference.errors import GatewayError

from . import playground
from .api import api
from .dashboard import dashboard_view
from .errors import error_response, request_protocol
from .metrics import metrics_view

urlpatterns = [
    # The API first: resolving a path walks these in order, once per request.
    path("", api.urls),
    # Outside /v1: scraped with its own token (or from loopback), not an API key.
    path("metrics", metrics_view, name="gateway-metrics"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="gateway-dashboard"),
    path("admin/playground/", admin.site.admin_view(playground.page), name="gateway-playground"),
    path("admin/playground/stream/", playground.stream, name="gateway-playground-stream"),
    path("admin/", admin.site.urls),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Unknown paths under /v1 answer in the API envelope, not Django's HTML page."""
    if request.path.startswith("/v1/") or request.path == "/v1":
        error = GatewayError(f"no route for {request.method} {request.path}", status=404)
        error.kind, error.code = "not_found", "unknown_url"
        return error_response(error, request_protocol(request))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


handler404 = not_found
