"""The edge guard: what daphne cannot be told through its options, done in Twisted.

daphne reads a whole request body into a temporary file before the
application runs, waits forever for a slow client's headers (its idle timer
restarts on every byte) and accepts any number of connections. This module is
a Twisted wrapping factory around daphne's HTTP factory (public Twisted API:
`twisted.protocols.policies`, and `HTTPChannel.requestFactory`), installed by
`gateway.edge.server`. Its state is per process (one factory per listening
port, counters shared by the process's ports through the `Guard` instance).

Per connection (`GuardedConnection`):
- a deadline for each request's head, from its first byte (408 past it), and a
  head size limit (431 past it, before Twisted's own bare 400);
- a deadline for the body once the head is in (408 past it);
- an idle deadline between requests (closed quietly);
- TCP_NODELAY (`ITCPTransport.setTcpNoDelay`): a stream's tokens go out at once.
Per request (`GuardedRequest`, daphne's request class with two hooks):
- a declared Content-Length over GATEWAY_MAX_BODY_BYTES: 413 at once, nothing read;
- a chunked body: counted as it is decoded, 413 as soon as it passes the limit,
  so at most the limit plus one read buffer is ever read;
- no form parsing of POST bodies (Twisted's `parsePOSTFormSubmission=False`).
Per process (`Guard`): a cap on connections, in all and per client address:
past either, the connection gets a 503 and is closed, before it is read.

Every refusal answers in JSON and is counted (`gateway.edge.refusals`); the
ones that know their path answer in the caller's protocol and are logged
against a known key. A connection cap cannot know the caller's protocol (nothing
has been read): its body carries both envelopes' fields, which both SDKs read.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from daphne.http_protocol import WebRequest
from django.conf import settings
from twisted.internet.interfaces import IDelayedCall, ITCPTransport, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from inference.errors import GatewayError

from ..errors import protocol_for
from ..keys.auth import key_in
from . import refusals
from .refusals import both_envelopes, error, raw_response

logger = logging.getLogger(__name__)

# After a refusal, how long and how much of the rest of a request is read and
# dropped (so the client reads the answer rather than a reset), before the
# connection is cut: a few seconds of a fast upload, never an unbounded one.
DRAIN_SECONDS = 5.0
DRAIN_BYTES = 64 << 20


def _tcp(transport: ITransport | None) -> ITCPTransport:
    """A client connection's transport. Twisted types it as an optional
    ITransport; from connectionMade on it is set, and it is TCP's (TLS's is an
    ITCPTransport too), so half-closing and aborting are there."""
    assert transport is not None, "the connection is not made yet"
    return cast(ITCPTransport, transport)


def _reactor() -> Any:
    # Imported when used: daphne installs the asyncio reactor first.
    from twisted.internet import reactor

    return reactor


# File descriptors kept for what is not a client connection (database, Redis,
# upstream pools, model files, log files).
_RESERVED_FDS = 64


@dataclass(frozen=True)
class Limits:
    max_body: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_header_bytes: int
    max_connections: int
    max_per_client: int

    @classmethod
    def from_settings(cls) -> Limits:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        fd_room = soft - _RESERVED_FDS if soft != resource.RLIM_INFINITY else 1 << 30
        return cls(
            max_body=settings.GATEWAY_MAX_BODY_BYTES,
            header_timeout=settings.GATEWAY_HEADER_TIMEOUT,
            body_timeout=settings.GATEWAY_BODY_TIMEOUT,
            idle_timeout=settings.GATEWAY_IDLE_TIMEOUT,
            max_header_bytes=settings.GATEWAY_MAX_HEADER_BYTES,
            max_connections=max(1, min(settings.GATEWAY_MAX_CONNECTIONS, fd_room)),
            max_per_client=settings.GATEWAY_MAX_CONNECTIONS_PER_CLIENT,
        )


class Refused(Protocol):
    """A connection over a cap: told so and closed, its bytes never parsed."""

    def __init__(self, failure: GatewayError) -> None:
        self.failure = failure

    def connectionMade(self) -> None:
        body = both_envelopes(self.failure)
        transport = _tcp(self.transport)
        transport.write(raw_response(503, body, (b"Retry-After: 1",)))
        # Half-close, then let the client's request bytes drain for a moment:
        # closing with unread bytes would reset the connection and lose the 503.
        transport.loseWriteConnection()
        self._abort = _reactor().callLater(1.0, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if self._abort.active():
            self._abort.cancel()


class GuardedConnection(ProtocolWrapper):
    """One client connection: deadlines, and the head size, as bytes arrive."""

    def __init__(self, factory: Guard, wrapped: Any, client: str) -> None:
        super().__init__(factory, wrapped)
        self.limits = factory.limits
        self.client = client
        self.in_request = False  # the head is in; until the response is done
        self.head_bytes = 0
        self.tail = b""
        self.refused = False
        self.drain_left = 0  # bytes still dropped after a refusal before it is cut
        self.drain_timer: IDelayedCall | None = None
        self.deadline: IDelayedCall | None = None
        self.expires: float | None = None  # reactor time, None: no deadline now
        self.kind: str | None = None  # "header", "body", or None: idle
        self.line = b""  # the request line, for the path a refusal answers for

    def connectionMade(self) -> None:
        # Twisted leaves Nagle's algorithm on: a stream's second small write
        # (the first token after the role chunk) would wait for the client's
        # delayed ACK. Streams are many small writes that must go out at once.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)  # ITCPTransport
        if set_no_delay is not None:
            set_no_delay(True)
        self._arm(self.limits.idle_timeout, None)

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            # Answered already: what the client still sends is dropped unparsed,
            # up to a bound (see refuse()).
            self.drain_left -= len(data)
            if self.drain_left < 0:
                _tcp(self.transport).abortConnection()
            return
        if not self.in_request and self._head_too_large(data):
            self.refuse(error(431, "header_too_large", "the request's headers are too large"))
            return
        super().dataReceived(data)

    def _head_too_large(self, data: bytes) -> bool:
        if self.head_bytes == 0 and data:  # a request's first byte: its head's clock starts
            self._arm(self.limits.header_timeout, "header")
            self.line = b""
        if b"\n" not in self.line and len(self.line) < 8192:
            self.line += data[:8192]
        window = self.tail + data
        end = window.find(b"\r\n\r\n")
        if end == -1:
            self.head_bytes += len(data)
            self.tail = window[-3:]
            return self.head_bytes > self.limits.max_header_bytes
        return self.head_bytes + end - len(self.tail) > self.limits.max_header_bytes

    def write(self, data: bytes) -> None:
        if not self.refused:  # after a refusal the channel has nothing more to say
            super().write(data)  # (Twisted would still send "100 Continue")

    def writeSequence(self, data: Any) -> None:
        if not self.refused:
            super().writeSequence(data)

    # Called by GuardedRequest, which parses what this class only counts.

    def path(self) -> str:
        """The path of the request whose head is being read (Twisted sets the
        request's own `uri` only once the body is in)."""
        parts = self.line.split(b"\r\n", 1)[0].split(b" ")
        return parts[1].split(b"?", 1)[0].decode("latin1") if len(parts) > 1 else ""

    def head_received(self, length: int | None) -> None:
        self.in_request, self.head_bytes, self.tail = True, 0, b""  # the line stays, for path()
        if length == 0:
            self._disarm()
        else:
            self._arm(self.limits.body_timeout, "body")

    def body_received(self) -> None:
        self._disarm()

    def response_done(self) -> None:
        self.in_request = False
        self._arm(self.limits.idle_timeout, None)

    def refuse(self, failure: GatewayError, path: str = "", headers: Any = None) -> None:
        """Answer with this refusal now and close; nothing more is read."""
        if self.refused:
            return
        self.refused = True
        self._disarm()
        headers = headers or {}
        status, body = refusals.envelope(failure, path, headers)
        transport = _tcp(self.transport)
        transport.write(raw_response(status, body))
        # Half-close, then read and drop what the client still sends, for a
        # while: closing with its bytes unread would reset the connection, and
        # a client still sending its body (no `Expect: 100-continue`) would see
        # the reset instead of this answer. As `Refused` does for a cap.
        transport.loseWriteConnection()
        self.drain_left = DRAIN_BYTES
        self.drain_timer = _reactor().callLater(DRAIN_SECONDS, transport.abortConnection)
        protocol = protocol_for(path, headers)
        refusals.in_background(
            refusals.refused(failure, status, protocol=protocol, path=path, secret=key_in(headers))
        )

    # One timer per connection, moved lazily: a request changes its deadline
    # four times (head, body, done, idle) but a timer is only made when the
    # pending one would fire too late, or when it fires early and must go on.

    def _arm(self, seconds: float, kind: str | None) -> None:
        reactor = _reactor()
        self.expires, self.kind = reactor.seconds() + seconds, kind
        if self.deadline is None or self.deadline.getTime() > self.expires:
            self._cancel_timer()
            self.deadline = reactor.callLater(seconds, self._expired)

    def _disarm(self) -> None:
        self.expires = None

    def _cancel_timer(self) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None

    def _expired(self) -> None:
        self.deadline = None
        if self.expires is None:
            return  # disarmed since: the next _arm makes a timer again
        left = self.expires - _reactor().seconds()
        if left > 0:
            self.deadline = _reactor().callLater(left, self._expired)
            return
        self.expires = None
        if self.kind is None:  # idle between requests: nothing to answer
            _tcp(self.transport).loseConnection()
            return
        kind = self.kind
        self.refuse(error(408, f"{kind}_timeout", f"the request's {kind} did not arrive in time"))

    def loseConnection(self) -> None:
        if self.refused:
            return  # the refusal's drain ends the connection (a close now would reset it)
        super().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        self._cancel_timer()
        if self.drain_timer is not None and self.drain_timer.active():
            self.drain_timer.cancel()
        super().connectionLost(reason)


class Guard(WrappingFactory[GuardedConnection]):
    protocol = GuardedConnection

    def __init__(self, wrapped: Any, limits: Limits) -> None:
        super().__init__(wrapped)
        self.limits = limits
        self.per_client: Counter[str] = Counter()
        self.draining = False

    def buildProtocol(self, addr: Any) -> Any:
        host = getattr(addr, "host", "")
        refusal = self._over_cap(host)
        if refusal is not None:
            refusals.count(refusal.code or "", 503)
            return Refused(refusal)
        wrapped = self.wrappedFactory.buildProtocol(addr)
        wrapped.requestFactory = GuardedRequest  # daphne's request, with the body hooks
        return GuardedConnection(self, wrapped, host)

    def _over_cap(self, host: str) -> GatewayError | None:
        if self.draining:
            return error(503, "shutting_down", "the gateway is shutting down; retry shortly")
        if len(self.protocols) >= self.limits.max_connections:
            return error(503, "too_many_connections", "the gateway has too many open connections")
        if self.per_client[host] >= self.limits.max_per_client:
            return error(
                503,
                "too_many_connections_per_client",
                f"too many open connections from this address (limit {self.limits.max_per_client})",
            )
        return None

    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)
        self.per_client[p.client] += 1

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        self.per_client[p.client] -= 1
        if self.per_client[p.client] <= 0:
            del self.per_client[p.client]


class GuardedRequest(WebRequest):
    """daphne's request, told where its head ends and its body grows."""

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        # daphne hands the raw body to the application; Twisted's own parse of
        # a POST's form fields (its Content-Type parsed with the email package,
        # about 40 us a request) would only be thrown away.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(channel, *args, **kwargs)

    def _connection(self) -> GuardedConnection | None:
        transport = self.channel.transport if self.channel is not None else None
        return transport if isinstance(transport, GuardedConnection) else None

    def _headers(self) -> dict[str, str]:
        return {
            k.decode("latin1").lower(): v[0].decode("latin1")
            for k, v in self.requestHeaders.getAllRawHeaders()
        }

    def _refuse(self, connection: GuardedConnection, failure: GatewayError) -> None:
        connection.refuse(failure, connection.path(), self._headers())

    def gotLength(self, length: int | None) -> None:
        self._received = 0
        connection = self._connection()
        if connection is None:
            return super().gotLength(length)
        connection.head_received(length)
        if connection.factory.draining:
            self._refuse(connection, error(503, "shutting_down", "the gateway is shutting down"))
        elif length is not None and length > connection.limits.max_body:
            self._refuse(connection, self._too_large(connection))
        # Refused or not, the channel expects a content file: an empty one then.
        super().gotLength(0 if connection.refused else length)

    def handleContentChunk(self, data: bytes) -> None:
        connection = self._connection()
        if connection is not None:
            if connection.refused:
                return
            self._received += len(data)
            if self._received > connection.limits.max_body:
                self._refuse(connection, self._too_large(connection))
                return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        connection = self._connection()
        if connection is not None:
            if connection.refused:
                return
            connection.body_received()
        super().requestReceived(command, path, version)

    def finish(self) -> None:
        connection = self._connection()
        super().finish()
        if connection is not None:
            connection.response_done()

    @staticmethod
    def _too_large(connection: GuardedConnection) -> GatewayError:
        limit = connection.limits.max_body
        message = f"request body is larger than the limit of {limit} bytes"
        return error(413, "request_too_large", message)
