"""JSON bytes for bodies sent to clients and upstreams.

orjson is fast but refuses integers beyond 64 bits, and those do reach us:
tool-call arguments arrive as JSON text and are parsed with the standard
library (a local model or a client may write `{"id": 123456789012345678901}`).
Such a body falls back to the standard library instead of failing the request.
"""

from __future__ import annotations

import json

import orjson


def dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
