"""ASGI entry point: HTTP goes to Django behind the body-size guard; WebSockets
feed the admin's live dashboard."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
# Model weights come only from local folders; make any hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

# The admin's CSS and JS are served by the gateway itself: no extra web server
# is needed for a local deployment.
django_app = ASGIStaticFilesHandler(get_asgi_application())

from gateway.handlers import ApiHandler, PathDispatcher  # noqa: E402

http_app = PathDispatcher(api=ApiHandler(), site=django_app)

from gateway.dashboard import websocket_application  # noqa: E402
from gateway.middleware import BodySizeLimit  # noqa: E402
from gateway.startup import on_startup  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(http_app, settings.GATEWAY_MAX_BODY_BYTES),
        "websocket": websocket_application(),
    }
)

on_startup()
