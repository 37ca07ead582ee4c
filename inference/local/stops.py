"""Stop strings matched on decoded text, not on token ids.

The same string can tokenize differently depending on what precedes it, so a
token-level matcher misses stops; matching text is exact. Text that might be
the start of a stop string is held back until it is known not to be.
"""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """Take new text; return what is safe to emit and the stop string hit, if any."""
        if not self.stops:
            return text, None
        self._pending += text
        best: tuple[int, str] | None = None
        for stop in self.stops:
            index = self._pending.find(stop)
            if index != -1 and (best is None or index < best[0]):
                best = (index, stop)
        if best is not None:
            emitted = self._pending[: best[0]]
            self._pending = ""
            return emitted, best[1]
        keep = self._held_back()
        cut = len(self._pending) - keep
        emitted, self._pending = self._pending[:cut], self._pending[cut:]
        return emitted, None

    def flush(self) -> str:
        """The held-back text, once the sequence has ended without a stop."""
        rest, self._pending = self._pending, ""
        return rest

    def _held_back(self) -> int:
        """Length of the longest suffix of pending text that starts some stop string."""
        longest = max(len(s) for s in self.stops) - 1
        for size in range(min(longest, len(self._pending)), 0, -1):
            tail = self._pending[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0
