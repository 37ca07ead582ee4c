"""A model server (`manage.py serve_models`, started for real) behind a front
gateway that reaches it as a provider of kind model-server, driven with the
official SDKs: the key guard, streaming, prefill continuation and exact
count_tokens give what the same model gives in-process, and a client that
leaves stops the generation on the model server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from .conftest import ROOT, LiveServer, routed_gateway, run_in_shell, server_env, wait_healthy

pytestmark = pytest.mark.e2e

KEY = "ms-key-" + "k" * 32
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("model-server")
    server = LiveServer(data_dir=data, env=server_env(data, GATEWAY_MODEL_SERVER_KEY=KEY))
    server.prepare(demo=True)
    log = open(data / "serve_models.log", "wb")  # noqa: SIM115
    server.process = subprocess.Popen(
        [sys.executable, "manage.py", "serve_models", "--host", "127.0.0.1",
         "--port", str(server.port), "--no-demo"],
        cwd=ROOT, env=server.env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_healthy(server.url, server.process, lambda: (data / "serve_models.log").read_text(), 60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(
    tmp_path_factory: pytest.TempPathFactory, model_server: LiveServer
) -> Iterator[LiveServer]:
    spec = {
        "providers": [{"name": "mac", "kind": "model-server", "key": KEY,
                       "base_url": f"{model_server.url}/v1"}],
        "mappings": [{"pattern": "remote-demo", "chain": [{"provider": "mac", "model": "demo"}]}],
    }  # fmt: skip
    with routed_gateway(tmp_path_factory.mktemp("front"), spec, demo=True) as server:
        yield server


def test_the_model_server_wants_its_key_and_serves_only_local_models(
    model_server: LiveServer,
) -> None:
    url = f"{model_server.url}/v1/chat/completions"
    body = {"model": "demo", "messages": HI, "max_tokens": 3}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = httpx.post(url, json=body, headers={"authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and "nope" not in wrong.text
    right = httpx.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert right.status_code == 200, right.text
    log = (model_server.data_dir / "serve_models.log").read_text()
    assert "Model server starting on http://127.0.0.1:" in log and "demo" in log
    assert KEY not in log


def test_streaming_prefill_and_count_tokens_match_the_model_in_process(front: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="x", max_retries=0)

    def streamed(model: str) -> str:
        chunks = client.chat.completions.create(
            model=model, messages=HI, max_tokens=12, temperature=0, stream=True  # type: ignore[arg-type]
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    remote = streamed("remote-demo")
    assert remote and remote == streamed("demo")
    claude = anthropic.Anthropic(base_url=front.url, api_key="x", max_retries=0)
    prefilled = [*HI, {"role": "assistant", "content": "echo: hello"}]

    def continued(model: str) -> str:
        message = claude.messages.create(
            model=model, max_tokens=8, extra_body={"temperature": 0},
            messages=prefilled,  # type: ignore[arg-type]
        )  # fmt: skip
        return "".join(b.text for b in message.content if b.type == "text")

    assert continued("remote-demo") == continued("demo")
    counted = {
        model: claude.messages.count_tokens(model=model, messages=HI).input_tokens  # type: ignore[arg-type]
        for model in ("remote-demo", "demo")
    }
    assert counted["remote-demo"] == counted["demo"] > 0


_ROWS = """
import json
from gateway.usage.models import RequestLog
print("ROWS=" + json.dumps(list(RequestLog.objects.filter(status=499).values(
    "requested_model", "output_tokens"))))
"""


def test_a_client_that_leaves_stops_the_generation_on_the_model_server(
    front: LiveServer, model_server: LiveServer
) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="x", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="remote-demo", messages=HI, max_tokens=3000, stream=True  # type: ignore[arg-type]
    ) as response:
        events = response.iter_lines()
        got = [line for line, _ in zip(events, range(4), strict=False)]
        assert any(line.startswith("data:") for line in got)
    # The model server saw its client (the front gateway) go away mid-answer.
    deadline = time.monotonic() + 30
    while True:
        out = run_in_shell(model_server, _ROWS, doing="reading the model server's log")
        rows = json.loads(next(x for x in out.splitlines() if x.startswith("ROWS="))[5:])
        if rows:
            break
        assert time.monotonic() < deadline, "the model server never saw the client leave"
        time.sleep(0.2)
    assert rows[0]["requested_model"] == "demo" and rows[0]["output_tokens"] < 3000


def test_serve_models_refuses_a_public_address_and_a_missing_key(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    for args, extra, said in (
        (["--host", "8.8.8.8"], {"GATEWAY_MODEL_SERVER_KEY": KEY}, "a public address"),
        ([], {}, "set GATEWAY_MODEL_SERVER_KEY"),
    ):
        result = subprocess.run(
            [sys.executable, "manage.py", "serve_models", "--dry-run", "--no-demo", *args],
            cwd=ROOT, env={**env, **extra}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 1 and said in result.stderr, result.stderr
