"""The cloud clients' connections (inference.cloud.connections: httpx-aiohttp's
transport as the gateway sets it up) against a scripted loopback server: what
the failover policy relies on (keep-alive reuse, abandoned streams closing
their connection, failures told apart as httpx's own transport tells them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from inference.cloud.connections import Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server whose every connection runs `handler`; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.closed += 1
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


def fixed(body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Transport("http://127.0.0.1")) as client:
        yield client


async def test_keep_alive_reuses_one_connection(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await server.read_request(reader)
            writer.write(fixed(b'{"echo": ' + body + b"}"))
            await writer.drain()

    async with Server(handler) as server:
        for i in range(5):
            response = await client.post(server.url + "/x", content=str(i).encode())
            assert response.status_code == 200
            assert response.json() == {"echo": i}
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /x HTTP/1.1\r\n")
        assert b"\r\ncontent-length: 1\r\n" in server.requests[0].lower()


async def test_chunked_body_and_informational_response(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"data: a\n\n", b"data: b\n\n"):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await server.read_request(reader)  # the connection is reused
        writer.write(fixed(b"{}"))
        await writer.drain()

    async with Server(handler) as server:
        async with client.stream("POST", server.url, content=b"{}") as response:
            assert response.status_code == 200
            parts = [part async for part in response.aiter_raw()]
        assert b"".join(parts) == b"data: a\n\ndata: b\n\n"
        assert len(parts) == 2  # each chunk as it came: streams are not buffered
        assert (await client.post(server.url, content=b"{}")).json() == {}
        assert server.connections == 1


async def test_body_until_close_is_complete_and_not_reused(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    async with Server(handler) as server:
        assert (await client.post(server.url, content=b"")).text == "all of it"
        assert (await client.post(server.url, content=b"")).text == "all of it"
        assert server.connections == 2


async def test_server_closing_an_idle_connection_is_noticed(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(fixed(b"1"))
        await writer.drain()  # then close: keep-alive refused after the fact

    async with Server(handler) as server:
        assert (await client.post(server.url, content=b"")).text == "1"
        await asyncio.sleep(0.05)
        assert (await client.post(server.url, content=b"")).text == "1"
        assert server.connections == 2


async def test_reset_before_headers_is_a_protocol_error(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.transport.abort()

    async with Server(handler) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
            await client.post(server.url, content=b"{}")


async def test_cut_body_and_garbage_are_errors(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await server.read_request(reader)
        if body == b"cut":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        else:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async with Server(handler) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="not completed"):
            await client.post(server.url, content=b"cut")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(server.url, content=b"garbage")


async def test_abandoned_stream_closes_its_connection(client: httpx.AsyncClient) -> None:
    """The upstream must see a client that stops reading go away, or it keeps generating."""
    gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"5\r\nhello\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
                if reader.at_eof():
                    raise ConnectionResetError
        except ConnectionError:
            gone.set()
            raise

    async with Server(handler) as server:
        async with client.stream("POST", server.url, content=b"{}") as response:
            async for _ in response.aiter_raw():
                break
        await asyncio.wait_for(gone.wait(), 2)


async def test_a_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    """httpx-aiohttp alone says ConnectTimeout: the failover would then not retry."""
    async with Server(lambda reader, writer: asyncio.sleep(0)) as server:
        url = server.url
    async with httpx.AsyncClient(transport=Transport("http://127.0.0.1")) as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.post(url, content=b"{}")


async def test_requests_in_flight_are_counted_until_the_response_closes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(fixed(b"{}"))
            await writer.drain()

    transport = Transport("http://127.0.0.1")
    async with Server(handler) as server, httpx.AsyncClient(transport=transport) as client:
        async with client.stream("POST", server.url, content=b"{}") as response:
            assert transport.in_flight == 1
            await response.aread()
        assert transport.in_flight == 0
        await client.post(server.url, content=b"{}")
        assert transport.in_flight == 0


async def test_cookies_never_travel_between_requests() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(fixed(b"{}", extra=b"set-cookie: session=caller-a; Path=/\r\n"))
            await writer.drain()

    transport = Transport("http://127.0.0.1")
    async with Server(handler) as server:
        for _ in range(2):  # httpx's client is not involved: the transport alone
            response = await transport.handle_async_request(httpx.Request("POST", server.url))
            await response.aread()
            await response.aclose()
        assert not any(b"cookie:" in r.lower() for r in server.requests), server.requests
    await transport.aclose()


async def test_large_body_flows_with_backpressure(client: httpx.AsyncClient) -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB, past the high-water mark

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(fixed(blob, extra=b"x-kind: blob\r\n"))
        await writer.drain()

    async with Server(handler) as server:
        async with client.stream("POST", server.url, content=b"") as response:
            received = bytearray()
            async for part in response.aiter_raw():
                received += part
                await asyncio.sleep(0)  # a slow reader
        assert bytes(received) == blob
        assert response.headers["x-kind"] == "blob"


async def test_a_408_and_close_on_an_idle_connection_retires_it(
    client: httpx.AsyncClient,
) -> None:
    # A server's own "408" on an idle connection, then its close (what servers
    # do): not the next request's answer. (A server that kept the connection
    # open after it would have aiohttp read it as the next answer: see
    # docs/design.md, "Plumbing".)
    answered, hung_up = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(fixed(b"1"))
        await writer.drain()
        await answered.wait()  # the connection is idle in the client's pool now
        writer.write(
            b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        )
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    async with Server(handler) as server:
        assert (await client.post(server.url, content=b"")).text == "1"
        answered.set()
        await hung_up.wait()
        for _ in range(5):  # loop turns, not time: the client's side reads the 408 and the FIN
            await asyncio.sleep(0)
        second = await client.post(server.url, content=b"")
        assert (second.status_code, second.text) == (200, "1")
        assert server.connections == 2


async def test_a_header_with_a_line_break_is_never_sent(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    async with Server(handler) as server:
        with pytest.raises(httpx.LocalProtocolError, match="control character"):
            await client.post(server.url, content=b"", headers={"x-key": "a\r\nx-evil: 1"})
        assert server.requests == []


def test_a_proxy_from_the_environment_is_taken_per_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inference.cloud.connections import environment_proxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "models.internal")
    proxy = environment_proxy("https://api.openai.com/v1")
    assert proxy is not None and str(proxy.url) == "http://proxy.internal:3128"
    assert environment_proxy("https://models.internal/v1") is None  # NO_PROXY
    assert environment_proxy("http://api.openai.com/v1") is None  # no HTTP_PROXY
