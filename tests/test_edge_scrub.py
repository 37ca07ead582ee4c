"""Relayed upstream errors against a live gateway: an upstream that echoes the
provider key back, and one that cannot be reached, leak neither the key (to the
client or the log) nor the internal address (to the client)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import openai
import pytest

from .conftest import free_port, routed_gateway, single_try_provider

pytestmark = pytest.mark.e2e

KEY = "sk-proj-echoedEchoedECHOED0123456789abcdef"
PLAIN_KEY = "corp-gateway-token-7f3a9c1e5b"  # no well-known prefix: found by value


class Echoing(BaseHTTPRequestHandler):
    """An upstream as careless as some are: its 401 quotes the Authorization header."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        sent = self.headers.get("authorization", "")
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {sent}.", "type": "x"}}
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def echoing_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echoing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_no_provider_key_and_no_internal_address_reach_the_client(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with echoing_upstream() as url:
        spec = {
            "providers": [
                {"name": "echo", **single_try_provider(KEY, base_url=url)},
                {"name": "plain", **single_try_provider(PLAIN_KEY, base_url=url)},
                {"name": "dead", **single_try_provider(KEY, base_url=dead)},
            ],
            "mappings": [
                {"pattern": "echo-*", "chain": [{"provider": "echo"}]},
                {"pattern": "plain-*", "chain": [{"provider": "plain"}]},
                {"pattern": "dead-*", "chain": [{"provider": "dead"}]},
            ],
        }
        with routed_gateway(tmp_path, spec) as server:
            oa = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
            an = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
            seen: list[str] = []
            for model in ("echo-1", "plain-1", "dead-1"):
                for call in (
                    lambda m=model: oa.chat.completions.create(
                        model=m, messages=[{"role": "user", "content": "hi"}]
                    ),
                    lambda m=model: an.messages.create(
                        model=m, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
                    ),
                    lambda m=model: list(
                        oa.chat.completions.create(
                            model=m, stream=True, messages=[{"role": "user", "content": "hi"}]
                        )
                    ),
                ):
                    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as caught:
                        call()
                    seen.append(caught.value.response.text)
            log = server.log()
    assert len(seen) == 9
    for text in seen:
        assert KEY not in text and PLAIN_KEY not in text and "sk-proj" not in text, text
        assert dead.split("//")[1].split("/")[0] not in text, text
    assert any("[redacted]" in text for text in seen[:6])
    assert any("<dead>" in text for text in seen[6:])
    # The operator's log keeps the address but never the key.
    assert KEY not in log and PLAIN_KEY not in log and "[redacted]" in log
