"""The edge against a live gateway: Host and Content-Type checks, WebSocket
paths, refusals counted and logged, memory bounded under hostile model names,
start-up checks of the process itself."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, LiveServer, make_api_keys, server_env

pytestmark = pytest.mark.e2e


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("path", ["/metrics", "/health", "/v1/models"])
def test_a_foreign_host_is_refused_on_every_api_path(live_gateway: LiveServer, path: str) -> None:
    response = httpx.get(live_gateway.url + path, headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(live_gateway.url + path).status_code == 200


def test_a_cross_site_simple_post_gets_415(live_gateway: LiveServer) -> None:
    before = metric(live_gateway, "gateway_edge_refusals_total", reason="unsupported_media_type")
    body = json.dumps({"model": "demo", "max_tokens": 1, "messages": []})
    response = httpx.post(
        f"{live_gateway.url}/v1/messages", content=body, headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["type"] == "error"  # Anthropic's envelope on /v1/messages
    after = metric(live_gateway, "gateway_edge_refusals_total", reason="unsupported_media_type")
    assert after == before + 1


def test_refusals_with_a_known_key_reach_the_request_log(tmp_path: Path) -> None:
    server = LiveServer(data_dir=tmp_path, env=server_env(tmp_path, GATEWAY_REQUIRE_API_KEYS="1"))
    server.manage("migrate", "--noinput")
    server.start()
    try:
        key = make_api_keys(server, {"edge": {}})["edge"]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}
        assert httpx.post(f"{server.url}/v1/chat/completions", headers=headers).status_code == 415
        anonymous = {"Content-Type": "text/plain"}
        assert httpx.post(f"{server.url}/v1/chat/completions", headers=anonymous).status_code == 415
        # Refused by the edge guard in front of the application, before any body.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                b"\r\nx-api-key: " + key.encode() + b"\r\nContent-Length: 999999999\r\n\r\n"
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        _wait_rows(server, 2)
    finally:
        server.stop()  # a clean stop writes whatever the log still buffers
    logged = sorted(json.loads(_rows(server)))
    assert logged == [
        [413, "request_too_large", "messages", "edge"],
        [415, "unsupported_media_type", "chat.completions", "edge"],
    ]


def _rows(server: LiveServer) -> str:
    return server.manage(
        "shell", "-c",
        "from gateway.usage.models import RequestLog; import json; print(json.dumps(["
        "[r.status, r.error_type, r.endpoint, r.api_key.name if r.api_key else None] "
        "for r in RequestLog.objects.all()]))",
    ).stdout.strip().splitlines()[-1]  # fmt: skip


def _wait_rows(server: LiveServer, count: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while len(json.loads(_rows(server))) < count:
        assert time.monotonic() < deadline, "the request log row never came"
        time.sleep(0.2)


def test_a_websocket_to_an_unknown_path_is_refused(live_gateway: LiveServer) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws/other/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    # The gateway is the session's: only what it logs during this test counts.
    since = live_gateway.log_size()
    with socket.create_connection(("127.0.0.1", live_gateway.port), timeout=10) as sock:
        sock.sendall(request.encode())
        status = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 403"), status
    assert "Traceback" not in live_gateway.log(since)


def test_huge_model_names_leave_no_memory_behind(live_gateway: LiveServer) -> None:
    pid = live_gateway.process.pid  # type: ignore[union-attr]
    name = "m" * (10 << 20)
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "x"}]})
    with httpx.Client(base_url=live_gateway.url, timeout=60) as client:
        client.post("/v1/messages/count_tokens", content=body, headers=_JSON)  # warm up
        before = rss_mib(pid)
        for _ in range(100):
            response = client.post("/v1/messages/count_tokens", content=body, headers=_JSON)
            assert response.status_code == 400
            assert len(response.content) < 1000  # the name is not echoed
        after = rss_mib(pid)
    assert after - before < 50, f"RSS grew from {before:.0f} to {after:.0f} MiB"


_JSON = {"Content-Type": "application/json"}


def test_a_malformed_fernet_key_stops_the_asgi_app_naming_its_position(tmp_path: Path) -> None:
    good = "A" * 43 + "="
    env = server_env(tmp_path, GATEWAY_FERNET_KEYS=f"{good},not-a-key-SECRETVALUE")
    done = subprocess.run(
        [sys.executable, "-c", "import gateway.asgi"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "GATEWAY_FERNET_KEYS entry 2" in done.stderr
    assert "SECRETVALUE" not in done.stderr


def test_the_data_dir_and_its_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    # The real command (LiveServer.manage would copy a prepared template instead).
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=server_env(data), check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"gateway.sqlite3", "secret_key", "fernet_key"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
