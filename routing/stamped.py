"""A per-process cache of something read from the database, kept by a version stamp.

The request path reads the cached value: no database query per request. A
change saved in this process invalidates it at once (signals); a change saved
by another process is seen within the refresh period, when the stamp (one
tiny query) no longer matches the cached value's version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

T = TypeVar("T")


class StampedCache(Generic[T]):
    def __init__(
        self,
        load: Callable[[], T],
        stamp: Callable[[], int],
        version_of: Callable[[T], int],
        refresh_setting: str,
    ) -> None:
        self._load = load  # must read the stamp before the data, so no change is missed
        self._stamp = stamp
        self._version_of = version_of
        self._refresh_setting = refresh_setting
        self._lock = threading.Lock()
        self._value: T | None = None
        self._checked_at = 0.0

    def invalidate(self) -> None:
        self._value = None

    def last(self) -> T | None:
        return self._value

    def fresh(self) -> T | None:
        value = self._value
        refresh = getattr(settings, self._refresh_setting)
        if value is not None and time.monotonic() - self._checked_at < refresh:
            return value
        return None

    def get(self) -> T:
        value = self.fresh()
        if value is not None:
            return value
        with self._lock:
            value = self._value
            if value is None or self._stamp() != self._version_of(value):
                value = self._load()
            self._value = value
            self._checked_at = time.monotonic()
            return value

    async def aget(self) -> T:
        # The fast path stays on the event loop: no thread hop per request. The
        # slow one closes stale connections around its query, as a request would.
        value = self.fresh()
        return value if value is not None else await database_sync_to_async(self.get)()
