"""Work done once per server process, after Django is ready."""

from __future__ import annotations

import logging

from django.db import DatabaseError

logger = logging.getLogger(__name__)


def on_startup() -> None:
    # daphne has no ASGI lifespan support, so this runs at import of the app.
    from routing.backends import preload_local_models

    try:
        preload_local_models()
    except DatabaseError as exc:  # not migrated yet: models load on first use
        logger.warning("preloading skipped: %s", exc)
