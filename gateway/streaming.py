"""Streaming answers: once content is sent, a failure is said in-band, never a clean end."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from django.http import StreamingHttpResponse

from inference.errors import EngineError, GatewayError
from inference.types import Event

logger = logging.getLogger(__name__)


class Encoder:
    """What a wire protocol provides to turn events into bytes."""

    encode: Callable[[Event], bytes]
    error: Callable[[GatewayError], bytes]


async def _body(
    held: list[Event], events: AsyncIterator[Event], encoder: Encoder, label: str
) -> AsyncIterator[bytes]:
    try:
        for event in held:
            yield encoder.encode(event)
        async for event in events:
            yield encoder.encode(event)
    except GatewayError as exc:
        # Content was already sent with a 200: say so in-band, never a clean end.
        logger.warning("stream from %s failed after content: %s", label, exc.message)
        yield encoder.error(exc)
    except Exception as exc:
        logger.exception("stream from %s failed after content", label)
        yield encoder.error(EngineError(f"stream failed: {type(exc).__name__}"))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def sse_response(
    held: list[Event],
    events: AsyncIterator[Event],
    encoder: Encoder,
    label: str,
    headers: dict[str, str] | None = None,
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _body(held, events, encoder, label), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for key, value in (headers or {}).items():
        response[key] = value
    return response
