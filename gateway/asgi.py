"""ASGI entry point: HTTP goes to Django behind the body-size guard; WebSockets
feed the admin's live dashboard.

Whatever starts this module (`manage.py serve`, `python -m gateway.edge.server`,
a bare `daphne gateway.asgi:application`) gets the same start-up checks: a
malformed GATEWAY_FERNET_KEYS entry stops the process here, named by position.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
# Model weights come only from local folders; make any hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

# The admin's CSS and JS are served by the gateway itself: no extra web server
# is needed for a local deployment.
django_app = ASGIStaticFilesHandler(get_asgi_application())

from routing.crypto import DecryptionError, fernet  # noqa: E402

try:
    fernet()
except DecryptionError as exc:  # the message names the entry, never its value
    raise ImproperlyConfigured(str(exc)) from None

from gateway.handlers import ApiHandler, PathDispatcher  # noqa: E402

http_app = PathDispatcher(api=ApiHandler(), site=django_app)

from gateway.dashboard import WS_PATH, websocket_application  # noqa: E402
from gateway.edge.websocket import KnownPathsOnly  # noqa: E402
from gateway.middleware import BodySizeLimit  # noqa: E402
from gateway.startup import on_startup  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(http_app, settings.GATEWAY_MAX_BODY_BYTES),
        "websocket": KnownPathsOnly(websocket_application(), (f"/{WS_PATH}",)),
    }
)

on_startup()
