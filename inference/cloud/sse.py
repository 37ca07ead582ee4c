"""A forgiving, exact reader of server-sent events.

Handles multi-line `data:`, comments and keep-alives, `event:` and `id:`
lines, CRLF/CR line endings, and a last event not followed by a blank line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEParser:
    """Bytes in, complete events out, as they arrive (`feed`), then `close`."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk
        # A CR at the end may be the first half of a CRLF split across chunks:
        # it waits for the next byte, or it would end a line twice.
        held = b"\r" if buffer.endswith(b"\r") else b""
        if held:
            buffer = buffer[:-1]
        lines = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = lines.pop() + held  # an incomplete line waits for more bytes
        events: list[SSEEvent] = []
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if self._data or self._event:
                    events.append(SSEEvent("\n".join(self._data), self._event, self._id))
                self._data, self._event = [], None
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._event = value
            elif field == "id":
                self._id = value
        return events

    def close(self) -> list[SSEEvent]:
        """The stream ended: a last event not followed by a blank line still counts."""
        rest = self._buffer.rstrip(b"\r")
        self._buffer = b""
        if rest:
            line = rest.decode("utf-8", errors="replace")
            if line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
        if self._data:
            return [SSEEvent("\n".join(self._data), self._event, self._id)]
        return []


def encode_sse(event: SSEEvent) -> bytes:
    """The event framed again as SSE, field for field (for passthrough)."""
    out = f"event: {event.event}\n" if event.event else ""
    out += "".join(f"data: {line}\n" for line in event.data.split("\n"))
    return (out + "\n").encode()
