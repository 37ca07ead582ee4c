"""The local engine's prompt (prefix) cache: KV caches kept after a sequence ends.

Clients resend the whole conversation every turn; keeping each finished (or
cancelled) sequence's KV cache, keyed by its tokens (prompt and answer), lets
the next turn prefill only what is new. mlx_lm.server does the same with the
same pieces.

Which unit owns what:
- Entries belong to one *loaded* model: a `LoadedModel` instance is the key, so
  a reload (new weights, new path) never sees its predecessor's caches, and
  unloading a model drops its entries at once (`drop`).
- The byte budget is one per *process*, across models (`max_bytes`,
  GATEWAY_PROMPT_CACHE_BYTES): memory is shared by every resident model.
- Only the engine thread calls into it (MLX arrays live on that thread); the
  counters and `nbytes` are plain ints that other threads may read.

mlx-lm's `LRUPromptCache` does the lookup (longest cached prefix, or a longer
entry trimmed to the shared prefix with `trim_prompt_cache`), the LRU order and
the per-store byte cap. What it lacks, and is added here with public calls only:
- Removing one model's entries: it has no such call, so each loaded model gets
  its own `LRUPromptCache`, and dropping the model drops that object.
- One budget across those stores: after an insert, stores of the least recently
  used models give up their own least recently used entries first
  (`trim_to`), until the total is within the cap. Across models the order is
  therefore by model, not by entry: a model in use keeps its entries longest.
- An exact match leaves nothing to prefill, which `BatchGenerator.insert`
  refuses (a sequence needs one input token): the cache is trimmed by one token
  so the last prompt token is fed again.
- An entry larger than the whole budget is never stored: inserting it would
  evict everything else only to be evicted itself, and the store would briefly
  hold more than its cap.
- A minimum worth reusing (`min_reuse` tokens): every prompt shares the chat
  template's opening with every entry, and counting those few tokens as hits
  would show a hit rate near 100% that saves nothing.
- Hit counters, for usage reporting and metrics.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

__all__ = ["PromptCache", "default_max_bytes"]

# LRUPromptCache also caps the number of entries; here bytes are the only limit.
_UNLIMITED_ENTRIES = 1 << 62
# Fewer shared tokens than this are prefilled again rather than counted as a hit.
MIN_REUSE = 32


def default_max_bytes() -> int:
    """A quarter of physical memory (KV caches live in RAM next to the weights)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # platforms without sysconf: a documented 4 GiB


def _nbytes(cache: list[Any]) -> int:
    return sum(c.nbytes for c in cache)


class PromptCache:
    def __init__(self, max_bytes: int, min_reuse: int = MIN_REUSE) -> None:
        self.max_bytes = max(0, max_bytes)
        self.min_reuse = max(1, min_reuse)
        self._stores: dict[Any, LRUPromptCache] = {}
        self._used: dict[Any, int] = {}  # model -> when its store was last touched
        self._clock = itertools.count()
        self.nbytes = 0  # kept current after every change, for readers on other threads
        self.lookups = 0
        self.hits = 0
        self.tokens_reused = 0

    def fetch(self, model: Any, prompt: list[int]) -> tuple[list[Any] | None, int]:
        """A cache holding the longest reusable prefix of `prompt`, and its length.

        The cache is a copy (the entry stays for others); (None, 0) on a miss.
        """
        self.lookups += 1
        store = self._stores.get(model)
        if store is None or len(prompt) < 2:
            return None, 0
        cache, rest = store.fetch_nearest_cache(model, prompt)
        if cache is None:
            return None, 0
        if not rest:
            if not can_trim_prompt_cache(cache):
                return None, 0
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        cached = len(prompt) - len(rest)
        if cached < self.min_reuse:
            return None, 0
        self._used[model] = next(self._clock)
        self.hits += 1
        self.tokens_reused += cached
        return cache, cached

    def insert(self, model: Any, tokens: list[int], cache: list[Any]) -> bool:
        """Keep `cache` (the KV of exactly `tokens`); False if it cannot fit at all."""
        size = _nbytes(cache)
        if not tokens or not cache or size > self.max_bytes:
            return False
        store = self._stores.get(model)
        if store is None:
            store = self._stores[model] = LRUPromptCache(
                max_size=_UNLIMITED_ENTRIES, max_bytes=self.max_bytes
            )
        store.insert_cache(model, list(tokens), cache)
        self._used[model] = next(self._clock)
        self._fit()
        return True

    def drop(self, model: Any) -> None:
        """Forget every entry of `model` (it is being unloaded)."""
        self._stores.pop(model, None)
        self._used.pop(model, None)
        self.nbytes = self._total()

    def clear(self) -> None:
        self._stores.clear()
        self._used.clear()
        self.nbytes = 0

    def entries(self, model: Any) -> int:
        store = self._stores.get(model)
        return len(store) if store is not None else 0

    def _total(self) -> int:
        return sum(store.nbytes for store in self._stores.values())

    def _fit(self) -> None:
        total = self._total()
        for model in sorted(self._stores, key=self._used.__getitem__):
            if total <= self.max_bytes:
                break
            store = self._stores[model]
            before = store.nbytes
            store.trim_to(n_bytes=before - (total - self.max_bytes))
            total -= before - store.nbytes
        self.nbytes = total
