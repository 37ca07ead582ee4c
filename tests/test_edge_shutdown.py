"""Graceful shutdown (gateway.edge.drain) with streams open through a live gateway:
SIGTERM lets streams that finish within the grace period end normally, ends the
others with an in-band error in their protocol, refuses new work, and loses no
request-log row."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import fake_upstream, routed_gateway, run_in_shell, single_try_provider

pytestmark = pytest.mark.e2e

KEY = "sk-fake-shutdown-0123456789"
HI = [{"role": "user", "content": "hi"}]
STREAMS = {
    # name: (protocol, mapping pattern); slow ones take ~1.6 s (16 tokens x 0.1 s)
    "oa-slow-1": "openai",
    "oa-slow-2": "openai",
    "oa-stall-1": "openai",
    "oa-stall-2": "openai",
    "an-slow": "anthropic",
    "an-stall": "anthropic",
}

_ROWS = """
import asyncio
import json
from gateway.usage.models import RequestLog
print("ROWS=" + json.dumps([[r.requested_model, r.status, r.error_type, r.output_tokens]
                            for r in RequestLog.objects.all()]))
"""


def spec(url: str) -> dict[str, object]:
    provider = single_try_provider(
        KEY, stream_idle_timeout=60.0, total_timeout=60.0, first_byte_timeout=60.0
    )
    return {
        "providers": [
            {"name": "oa", **provider, "base_url": f"{url}/v1"},
            {"name": "an", **provider, "kind": "anthropic", "base_url": url},
        ],
        "mappings": [
            {
                "pattern": "oa-slow-*",
                "chain": [{"provider": "oa", "model": "fault-slow-tokens:0.1"}],
            },
            {
                "pattern": "oa-stall-*",
                "chain": [{"provider": "oa", "model": "fault-stall-after:3"}],
            },
            {"pattern": "an-slow", "chain": [{"provider": "an", "model": "fault-slow-tokens:0.1"}]},
            {"pattern": "an-stall", "chain": [{"provider": "an", "model": "fault-stall-after:3"}]},
            {"pattern": "oa-whole", "chain": [{"provider": "oa", "model": "fault-slow-tokens:2"}]},
        ],
    }


def open_stream(base: str, name: str, started: threading.Event, out: dict[str, str]) -> None:
    if STREAMS[name] == "openai":
        url, body = f"{base}/v1/chat/completions", {"model": name, "messages": HI, "stream": True}
    else:
        url = f"{base}/v1/messages"
        body = {"model": name, "messages": HI, "max_tokens": 64, "stream": True}
    text = ""
    try:
        with httpx.stream("POST", url, json=body, timeout=120) as response:
            for chunk in response.iter_text():
                text += chunk
                if '"text"' in text or '"content"' in text:
                    started.set()
        out[name] = text  # the chunked body ended properly: no bare close
    except httpx.HTTPError as exc:
        out[name] = f"BROKEN: {exc!r} after {text!r}"
    finally:
        started.set()


def test_sigterm_drains_streams_then_ends_the_rest_in_band(tmp_path: Path) -> None:
    with (
        fake_upstream(KEY) as upstream,
        routed_gateway(tmp_path, spec(upstream.url), GATEWAY_SHUTDOWN_GRACE_SECONDS="8") as server,
    ):
        out: dict[str, str] = {}
        threads = []
        for name in STREAMS:
            started = threading.Event()
            thread = threading.Thread(target=open_stream, args=(server.url, name, started, out))
            thread.start()
            threads.append(thread)
            assert started.wait(60), f"{name} never streamed"
        # And one that is not streamed, whose whole answer would take 32 s.
        whole: dict[str, httpx.Response] = {}
        body = {"model": "oa-whole", "messages": HI}
        url = f"{server.url}/v1/chat/completions"
        thread = threading.Thread(
            target=lambda: whole.setdefault("r", httpx.post(url, json=body, timeout=120))
        )
        thread.start()
        threads.append(thread)
        _wait_for(lambda: upstream.count(model="fault-slow-tokens:2") == 1)
        server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        refused = _refused_once_draining(server.url)
        for thread in threads:
            thread.join(120)
        assert server.process.wait(60) == 0  # type: ignore[union-attr]
        rows = run_in_shell(server, _ROWS, doing="reading the request log")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    for name in ("oa-slow-1", "oa-slow-2"):
        assert out[name].rstrip().endswith("data: [DONE]"), out[name]
    for name in ("oa-stall-1", "oa-stall-2"):
        last = out[name].rstrip().rsplit("data: ", 1)[1]
        assert json.loads(last)["error"]["code"] == "shutting_down", out[name]
    assert whole["r"].status_code == 503  # its answer had not started: a 503 in its envelope
    assert whole["r"].json()["error"]["code"] == "shutting_down"
    assert "event: message_stop" in out["an-slow"], out["an-slow"]
    error = out["an-stall"].rstrip().rsplit("event: error\ndata: ", 1)[1]
    assert json.loads(error)["error"]["type"] == "overloaded_error", out["an-stall"]
    logged = json.loads(next(x for x in rows.splitlines() if x.startswith("ROWS="))[5:])
    by_model = {model: (status, kind, tokens) for model, status, kind, tokens in logged}
    assert len(logged) == len(STREAMS) + 1  # nothing lost, the refused one had no key
    assert by_model["oa-whole"][:2] == (503, "shutting_down")
    for name in STREAMS:
        if "stall" in name:
            assert by_model[name] == (503, "shutting_down", 3), by_model
        else:
            assert by_model[name][:2] == (200, ""), by_model


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def _refused_once_draining(url: str) -> httpx.Response:
    """The first answer once the drain has begun (the signal is handled asynchronously)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/models", timeout=10)
        if response.status_code == 503:
            return response
    raise AssertionError("new requests were still served after SIGTERM")


def test_the_reactor_is_stopped_once_whichever_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second SIGTERM stops the reactor; the drain ending after it must not
    stop it again (Twisted raises ReactorNotRunning), nor the other way round."""
    import twisted.internet
    from twisted.internet.error import ReactorNotRunning

    from gateway.edge import drain

    class Reactor:  # Twisted's: running until fully stopped, stop() once only
        running, stops = True, 0

        def stop(self) -> None:
            if self.stops:
                raise ReactorNotRunning("Can't stop reactor that isn't running.")
            self.stops += 1

    reactor = Reactor()
    monkeypatch.setattr(twisted.internet, "reactor", reactor, raising=False)
    monkeypatch.setitem(drain._state, "draining", False)
    drain.stop_reactor()  # the second signal
    asyncio.run(drain.drain(grace=0))  # then the drain's end
    assert reactor.stops == 1
    reactor.running = False
    drain.stop_reactor()
    assert reactor.stops == 1
