"""The gateway itself: the Django project (settings, URLs, ASGI application), its
HTTP edge, the client-facing APIs and apps (keys, usage), the dashboard and the
error envelopes. The top layer: it imports routing and inference, never the reverse."""
