"""A minimal HTTP/1.1 server connection on asyncio streams.

Hand-written rather than h11 because the fake must be able to break the protocol
on purpose (RST before headers, a body cut mid-chunk, silence) and because it is
the upstream of an overhead benchmark, where a general parser's per-event cost
would show. It handles what real clients send: Content-Length and chunked request
bodies, ``Expect: 100-continue``, keep-alive and pipelining-free request loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

HEAD_LIMIT = 256 * 1024
BODY_LIMIT = 64 * 1024 * 1024

_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus}
_STATUS_LINES[529] = b"HTTP/1.1 529 Overloaded\r\n"
CHUNK_END = b"0\r\n\r\n"  # last-chunk marker that ends a chunked body


class BadRequest(Exception):
    """The peer sent something that is not HTTP/1.x; answer ``status`` and hang up."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")
    return line


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Connection:
    """One accepted TCP connection; requests are read and answered in turn."""

    __slots__ = ("http10", "id", "keep_alive", "reader", "transport", "writer")

    def __init__(self, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.id = conn_id
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.keep_alive = True
        self.http10 = False  # HTTP/1.0 peers get unframed streams ended by closing

    @property
    def closing(self) -> bool:
        return self.transport.is_closing()

    async def read_request(self) -> Request | None:
        """The next request, or None when the peer closed between requests."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise BadRequest(400, "incomplete request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise BadRequest(431, "request head too large") from None
        lines = head.lstrip(b"\r\n").split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadRequest(400, "malformed header line")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        conn = headers.get("connection", "").lower()
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        path, _, query = target.partition("?")
        if headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(headers)
        self.keep_alive = keep_alive
        self.http10 = version == "HTTP/1.0"
        return Request(method, path, query, version, headers, body, keep_alive)

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._read_chunked()
        length_text = headers.get("content-length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise BadRequest(400, "bad content-length") from None
        if length < 0 or length > BODY_LIMIT:
            raise BadRequest(413, "body too large")
        return await self.reader.readexactly(length) if length else b""

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size") from None
            if size == 0:
                # Trailers are allowed after the last chunk; nothing here needs them.
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            total += size
            if total > BODY_LIMIT:
                raise BadRequest(413, "body too large")
            parts.append(await self.reader.readexactly(size))
            if await self.reader.readexactly(2) != b"\r\n":
                raise BadRequest(400, "bad chunk terminator")

    def head(self, status: int, headers: bytes, *, length: int | None) -> bytes:
        """Status line and headers; ``length`` None means a chunked (streamed) body."""
        if length is not None:
            framing = b"content-length: %d\r\n" % length
        elif self.http10:
            framing = b""
            self.keep_alive = False
        else:
            framing = b"transfer-encoding: chunked\r\n"
        keep = b"connection: keep-alive\r\n" if self.keep_alive else b"connection: close\r\n"
        return b"%b%b%b%b\r\n" % (status_line(status), headers, framing, keep)

    async def send(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("peer went away")
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Abort with RST: SO_LINGER 0 makes close() drop the connection instead of FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.keep_alive = False
        self.transport.abort()

    def close(self) -> None:
        """Close after flushing what was written (FIN): the 'cut' faults use this."""
        self.keep_alive = False
        self.transport.close()

    async def wait_for_peer_close(self) -> None:
        """Stay silent until the client hangs up (or the server is stopped)."""
        self.keep_alive = False
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.transport.close()
