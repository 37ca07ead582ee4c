"""The gateway's ASGI application, built without starting anything.

HTTP goes, behind the body-size guard, to the API's own application
(gateway.handlers) for the API paths and to Django's for the admin and its
static files; WebSockets feed the admin's live dashboard. Importing this module
sets Django up and checks the configuration (a malformed GATEWAY_FERNET_KEYS
entry stops the process here, named by position), but starts no thread and
loads no model: that is `gateway.startup.start()`, which each entry point
calls (gateway.edge.server, hence `manage.py serve`; gateway.asgi for servers
that import an application).
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

from gateway.dashboard import WS_PATH, websocket_application  # noqa: E402
from gateway.edge.websocket import KnownPathsOnly  # noqa: E402
from gateway.handlers import ApiApplication, PathDispatcher  # noqa: E402
from gateway.middleware import BodySizeLimit  # noqa: E402

http_app = PathDispatcher(api=ApiApplication(), site=django_app)

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(http_app, settings.GATEWAY_MAX_BODY_BYTES),
        "websocket": KnownPathsOnly(websocket_application(), (f"/{WS_PATH}",)),
    }
)
