"""A forgiving, exact reader of server-sent events.

Handles multi-line `data:`, comments and keep-alives, `event:` and `id:`
lines, CRLF/CR line endings, and a last event not followed by a blank line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    decoder_buffer = b""
    data: list[str] = []
    event: str | None = None
    event_id: str | None = None
    async for chunk in chunks:
        decoder_buffer += chunk
        # A CR at the end may be the first half of a CRLF split across chunks:
        # it waits for the next byte, or it would end a line twice.
        held = b"\r" if decoder_buffer.endswith(b"\r") else b""
        if held:
            decoder_buffer = decoder_buffer[:-1]
        lines = decoder_buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        decoder_buffer = lines.pop() + held  # an incomplete line waits for more bytes
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if data or event:
                    yield SSEEvent("\n".join(data), event, event_id)
                data, event = [], None
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                event_id = value
    decoder_buffer = decoder_buffer.rstrip(b"\r")
    if decoder_buffer:
        line = decoder_buffer.decode("utf-8", errors="replace")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield SSEEvent("\n".join(data), event, event_id)


def encode_sse(event: SSEEvent) -> bytes:
    """The event framed again as SSE, field for field (for passthrough)."""
    out = f"event: {event.event}\n" if event.event else ""
    out += "".join(f"data: {line}\n" for line in event.data.split("\n"))
    return (out + "\n").encode()
