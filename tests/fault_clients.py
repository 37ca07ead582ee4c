"""Both official SDKs as the fault matrix's clients: what each saw of one request."""

from __future__ import annotations

from dataclasses import dataclass, field

import anthropic
import openai

from .conftest import LiveServer

HI = [{"role": "user", "content": "hello there"}]
MAX_TOKENS = 8


@dataclass
class Seen:
    text: str = ""
    model: str = ""
    status: int | None = None  # an HTTP error before any content
    in_band: str | None = None  # an error after content
    backend: str = ""
    error: str = ""  # the message of an HTTP error
    code: str | None = None  # its code (OpenAI) or type (Anthropic)
    finish: str | None = None  # finish_reason / stop_reason of a whole answer
    ids: set[str] = field(default_factory=set)  # stream: the completion / message ids seen
    finishes: int = 0  # stream: finish reasons (OpenAI) or message_stop events (Anthropic)
    output_tokens: int | None = None  # the usage the client was told


def call_openai(gateway: LiveServer, model: str, stream: bool) -> Seen:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=20)
    seen = Seen()
    try:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=HI, max_tokens=MAX_TOKENS
            )
            reply = raw.parse()
            seen.text, seen.model = reply.choices[0].message.content or "", reply.model
            seen.output_tokens = reply.usage.completion_tokens if reply.usage else None
            seen.backend, seen.finish = (
                raw.headers["x-gateway-backend"],
                reply.choices[0].finish_reason,
            )
            return seen
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=HI, max_tokens=MAX_TOKENS, stream=True
        ) as response:
            seen.backend = response.headers["x-gateway-backend"]
            try:
                for chunk in response.parse():
                    seen.model = chunk.model
                    seen.ids.add(chunk.id)
                    if chunk.choices:
                        seen.text += chunk.choices[0].delta.content or ""
                        seen.finish = chunk.choices[0].finish_reason or seen.finish
                        seen.finishes += chunk.choices[0].finish_reason is not None
            except openai.APIError as exc:
                seen.in_band = exc.message
    except openai.APIStatusError as exc:
        seen.status, seen.error, seen.code = exc.status_code, exc.message, exc.code
        seen.in_band = None
    return seen


def call_anthropic(gateway: LiveServer, model: str, stream: bool) -> Seen:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=20)
    seen = Seen()
    try:
        if not stream:
            raw = client.messages.with_raw_response.create(
                model=model,
                max_tokens=MAX_TOKENS,
                messages=HI,  # type: ignore[arg-type]
            )
            message = raw.parse()
            seen.text = "".join(b.text for b in message.content if b.type == "text")
            seen.model, seen.backend = message.model, raw.headers["x-gateway-backend"]
            seen.finish = message.stop_reason
            seen.output_tokens = message.usage.output_tokens
            return seen
        with client.messages.with_streaming_response.create(
            model=model,
            max_tokens=MAX_TOKENS,
            messages=HI,
            stream=True,  # type: ignore[arg-type]
        ) as response:
            seen.backend = response.headers["x-gateway-backend"]
            try:
                for event in response.parse():
                    if event.type == "message_start":
                        seen.model = event.message.model
                        seen.ids.add(event.message.id)
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        seen.text += event.delta.text
                    elif event.type == "message_delta":
                        seen.finish = event.delta.stop_reason
                        seen.output_tokens = event.usage.output_tokens
                    elif event.type == "message_stop":
                        seen.finishes += 1
            except anthropic.APIError as exc:  # its message abbreviates the event: read that
                error = exc.body.get("error") if isinstance(exc.body, dict) else None
                seen.in_band = error.get("message") if isinstance(error, dict) else exc.message
    except anthropic.APIStatusError as exc:
        seen.status, seen.error = exc.status_code, exc.message
        body = exc.body if isinstance(exc.body, dict) else {}
        seen.code = (body.get("error") or {}).get("type")
    return seen


CLIENTS = {"openai": call_openai, "anthropic": call_anthropic}
