"""The ASGI body-size guard, with a small configured limit."""

from __future__ import annotations

import json
from typing import Any

from gateway.middleware import BodySizeLimit


async def run(
    path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[list[dict[str, Any]], bool]:
    reached = False

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if message["type"] != "http.disconnect":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": headers}
    await BodySizeLimit(app, limit=10)(scope, receive, send)
    return sent, reached


async def test_declared_length_over_the_limit_is_refused_before_the_app() -> None:
    sent, reached = await run("/v1/chat/completions", [b"x" * 11], [(b"content-length", b"11")])
    assert not reached
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


async def test_chunked_body_over_the_limit_is_refused_midway() -> None:
    sent, reached = await run("/v1/messages", [b"x" * 6, b"x" * 6], [])
    assert reached
    assert [m["status"] for m in sent if "status" in m] == [413]  # the app sent nothing
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_too_large"  # Anthropic's


async def test_within_the_limit_passes() -> None:
    sent, _ = await run("/v1/chat/completions", [b"x" * 5, b"x" * 5], [(b"content-length", b"10")])
    assert sent[0]["status"] == 200
