"""The edge guard in front of daphne (gateway.edge.guard), against live servers:
bodies refused before they are read, slow clients cut off, connections capped."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer, server_env

pytestmark = pytest.mark.e2e

LIMIT = 1 << 20  # GATEWAY_MAX_BODY_BYTES in these servers
MIB = 1 << 20


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("guarded")
    env = server_env(
        data,
        GATEWAY_MAX_BODY_BYTES=str(LIMIT),
        GATEWAY_HEADER_TIMEOUT="1",
        GATEWAY_BODY_TIMEOUT="2",
        GATEWAY_MAX_CONNECTIONS="400",
        GATEWAY_MAX_CONNECTIONS_PER_CLIENT="100",
    )
    server = LiveServer(data_dir=data, env=env)
    server.manage("migrate", "--noinput")
    server.start()
    yield server
    server.stop()


def connect(server: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    sock.settimeout(30)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_declared_length_over_the_limit_gets_413_before_any_body(guarded: LiveServer) -> None:
    with contextlib.closing(connect(guarded)) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 41943040\r\nExpect: 100-continue\r\n\r\n"
        )
        status, body = read_response(sock)  # answered without one byte of the 40 MiB
    assert status == 413
    assert body["type"] == "error" and body["error"]["type"] == "request_too_large"  # type: ignore[index]


def test_a_2_gib_chunked_upload_is_cut_off_just_past_the_limit(guarded: LiveServer) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.connect(("127.0.0.1", guarded.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"  # 64 KiB chunks
    sent = 0
    with contextlib.closing(sock):
        while sent < 2 << 30:
            # A moment for the answer between chunks, so what the count includes
            # is what the server read, not what waits in the sockets' buffers.
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break  # the answer came
            try:
                sock.sendall(piece)
            except OSError:
                break  # closed by the server
            sent += len(piece)
        status, body = read_response(sock)
    assert status == 413 and body["error"]["code"] == "request_too_large"  # type: ignore[index]
    assert sent <= LIMIT + MIB, f"{sent / MIB:.1f} MiB sent before the 413"


def test_a_head_that_trickles_in_gets_408(guarded: LiveServer) -> None:
    with contextlib.closing(connect(guarded)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
        status, body = read_response(sock)
    assert status == 408 and body["error"]["code"] == "header_timeout"  # type: ignore[index]


def test_a_body_that_never_comes_gets_408(guarded: LiveServer) -> None:
    with contextlib.closing(connect(guarded)) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        status, body = read_response(sock)
    assert status == 408 and body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_20_kb_header_gets_431(guarded: LiveServer) -> None:
    response = httpx.get(f"{guarded.url}/health", headers={"X-Big": "a" * 20_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "header_too_large"


def test_a_keep_alive_connection_still_serves_after_the_guard(guarded: LiveServer) -> None:
    with httpx.Client(base_url=guarded.url) as client:
        for _ in range(5):
            assert client.get("/health").status_code == 200
        body = {"model": "nope", "messages": [{"role": "user", "content": "x" * 200_000}]}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 404  # read whole (under the limit) and routed


@pytest.fixture
def many_files() -> Iterator[None]:
    # mlx_lm lowers the open-file limit to 2048 when imported (as it does in the
    # gateway): this test holds 2,100 sockets of its own.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("many_files")
def test_2100_slow_clients_leave_real_requests_served(guarded: LiveServer) -> None:
    slow: list[socket.socket] = []
    try:
        for _ in range(2100):
            sock = connect(guarded, "127.0.0.2")  # another client address
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            slow.append(sock)
        response = httpx.get(f"{guarded.url}/health", timeout=30)
        assert response.status_code == 200
        # Every slow client was answered, none left hanging: turned away by the
        # per-client cap (503) or cut off by the header deadline (408).
        statuses = [read_response(sock)[0] for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert set(statuses) <= {408, 503} and len(statuses) == 2100


def test_connection_caps_per_client_and_per_process(tmp_path: Path) -> None:
    env = server_env(tmp_path, GATEWAY_MAX_CONNECTIONS="20", GATEWAY_MAX_CONNECTIONS_PER_CLIENT="5")
    server = LiveServer(data_dir=tmp_path, env=env)
    server.manage("migrate", "--noinput")
    server.start()
    held = [connect(server, "127.0.0.3") for _ in range(5)]
    try:
        status, body = read_response(connect(server, "127.0.0.3"))
        assert status == 503 and body["error"]["code"] == "too_many_connections_per_client"  # type: ignore[index]
        held += [connect(server, f"127.0.0.{4 + i % 3}") for i in range(15)]
        status, body = read_response(connect(server, "127.0.0.9"))
        assert status == 503 and body["error"]["code"] == "too_many_connections"  # type: ignore[index]
        # Both SDKs read this body: OpenAI's error.message, Anthropic's type/error.type.
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert "message" in body["error"]  # type: ignore[operator]
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_a_body_sent_without_expect_still_reads_its_413(guarded: LiveServer) -> None:
    """A client that sends its whole body before reading (no `Expect:
    100-continue`, as simple clients do) reads the 413, not a reset: the guard
    half-closes and drops the rest of the body instead of closing on it unread."""
    body = b"x" * (8 * LIMIT)  # far past the socket buffers: unread, it would reset
    with contextlib.closing(connect(guarded)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, answer = read_response(sock)
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"  # type: ignore[index]
    assert httpx.get(f"{guarded.url}/health", timeout=10).status_code == 200
