"""Anthropic Messages wire format, as the official ``anthropic`` SDK parses it."""

from __future__ import annotations

from typing import Any

import orjson

from .formats import InvalidBody, StreamPlan, positive_int, require_messages
from .replies import (
    Reply,
    choose_tools,
    count_words,
    echo_source,
    ends_with_user_turn,
    parse_stop,
    plan_text,
    plan_tools,
    trailing_assistant_text,
)

_dumps = orjson.dumps
_STOP = {
    "stop": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool": "tool_use",
}
_CONTEXT_WINDOW = 200_000

# status -> (error type, default message), per Anthropic's documented error list.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    408: ("timeout_error", "Request timed out."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def _envelope(type_: str, message: str, rid: str) -> bytes:
    return _dumps(
        {"type": "error", "error": {"type": type_, "message": message}, "request_id": f"req_{rid}"}
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (event.encode(), _dumps(data))


def _usage(reply: Reply, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _pick_tools(tools: list[Any], choice: Any) -> list[tuple[str, Any]]:
    named = isinstance(choice, dict) and choice.get("type") == "tool"
    wanted = choice.get("name") if named else None
    picked = []
    for tool in tools:
        # Server tools (web search, code execution...) have no input_schema and
        # are run by the provider, so only client tools can be "called" here.
        if not isinstance(tool, dict) or "input_schema" not in tool:
            continue
        name = tool.get("name")
        if isinstance(name, str) and (wanted is None or name == wanted):
            picked.append((name, tool.get("input_schema")))
    return picked


def input_tokens(body: dict[str, Any]) -> int:
    return count_words(require_messages(body), body.get("system"))


class AnthropicFormat:
    name = "anthropic"
    id_header = "request-id"
    overloaded_status = 529

    def error_body(self, status: int, message: str | None, rid: str, model: str | None) -> bytes:
        default = ("api_error", "Internal server error") if status >= 500 else _ERRORS[400]
        type_, text = _ERRORS.get(status, default)
        if status == 404 and model and message is None:
            text = f"model: {model}"
        return _envelope(type_, message or text, rid)

    def auth_error(self, key: str | None, rid: str) -> bytes:
        message = "invalid x-api-key" if key else "x-api-key header is required"
        return _envelope("authentication_error", message, rid)

    def content_policy_body(self, rid: str) -> bytes:
        return _envelope(
            "invalid_request_error", "Your request was flagged by our content policy.", rid
        )

    def context_length_body(self, tokens: int, rid: str) -> bytes:
        shown = max(tokens, _CONTEXT_WINDOW + 1)
        return _envelope(
            "invalid_request_error",
            f"prompt is too long: {shown} tokens > {_CONTEXT_WINDOW} maximum",
            rid,
        )

    def plan(self, body: dict[str, Any], words: int) -> Reply:
        messages = require_messages(body)
        max_tokens = positive_int(body, "max_tokens")
        if max_tokens is None:
            raise InvalidBody("max_tokens: Field required", "max_tokens")
        tokens_in = count_words(messages, body.get("system"))
        tools = body.get("tools")
        choice = body.get("tool_choice")
        wants_tool = not (isinstance(choice, dict) and choice.get("type") == "none")
        source = echo_source(messages)
        if tools and isinstance(tools, list) and wants_tool and ends_with_user_turn(messages):
            parallel = not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use"))
            picked = choose_tools(_pick_tools(tools, choice), source, parallel)
            if picked:
                return plan_tools(picked, source, tokens_in)
        return plan_text(
            source,
            words=words,
            max_tokens=max_tokens,
            stop=parse_stop(body.get("stop_sequences")),
            input_tokens=tokens_in,
            prefill=trailing_assistant_text(messages),
        )

    def message_body(self, reply: Reply, model: str, rid: str) -> bytes:
        if reply.tools:
            blocks = [
                {"type": "tool_use", "id": f"toolu_{rid}_{i}", "name": c.name, "input": c.input}
                for i, c in enumerate(reply.tools)
            ]
        else:
            blocks = [{"type": "text", "text": reply.text}]
        return _dumps(
            {
                "id": f"msg_{rid}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": _STOP[reply.finish],
                "stop_sequence": reply.stop_sequence,
                "usage": _usage(reply, reply.output_tokens),
            }
        )

    def stream(self, reply: Reply, model: str, rid: str, body: dict[str, Any]) -> StreamPlan:
        message: dict[str, Any] = {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The real API reports a token or so here and the total in message_delta.
            "usage": _usage(reply, 1),
        }

        def delta_head(index: int, kind: str, field: str) -> bytes:
            return (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                b'"delta":{"type":"%b","%b":' % (index, kind.encode(), field.encode())
            )

        if reply.tools:
            blocks = [
                {"type": "tool_use", "id": f"toolu_{rid}_{i}", "name": c.name, "input": {}}
                for i, c in enumerate(reply.tools)
            ]
            tokens = []
            for i, call in enumerate(reply.tools):
                head = delta_head(i, "input_json_delta", "partial_json")
                frames = [b"%b%b}}\n\n" % (head, _dumps(piece)) for piece in call.pieces]
                if i and frames:  # the previous call's block ends, this one's begins
                    frames[0] = _stop_and_start(i, blocks[i]) + frames[0]
                tokens += frames
        else:
            blocks = [{"type": "text", "text": ""}]
            head = delta_head(0, "text_delta", "text")
            # Hot path: splice each token into a prebuilt frame.
            tokens = [b"%b%b}}\n\n" % (head, _dumps(piece)) for piece in reply.tokens]
        last = len(blocks) - 1
        delta_usage = {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": reply.output_tokens,
        }
        return StreamPlan(
            preamble=[
                _sse("message_start", {"type": "message_start", "message": message}),
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": blocks[0]},
                ),
                _sse("ping", {"type": "ping"}),
            ],
            tokens=tokens,
            epilogue=[
                _sse("content_block_stop", {"type": "content_block_stop", "index": last}),
                _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {
                            "stop_reason": _STOP[reply.finish],
                            "stop_sequence": reply.stop_sequence,
                        },
                        "usage": delta_usage,
                    },
                ),
            ],
            terminator=[_sse("message_stop", {"type": "message_stop"})],
            malformed=b"event: content_block_delta\ndata: {not json at all\n\n",
            error=b"event: error\ndata: %b\n\n" % _envelope("overloaded_error", "Overloaded", rid),
        )

    def models_body(self, models: list[str]) -> bytes:
        data = [self._model(m) for m in models]
        return _dumps(
            {
                "data": data,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            }
        )

    def model_body(self, model: str) -> bytes:
        return _dumps(self._model(model))

    @staticmethod
    def _model(model: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model,
            "display_name": model.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }


def _stop_and_start(index: int, block: dict[str, Any]) -> bytes:
    stop = _sse("content_block_stop", {"type": "content_block_stop", "index": index - 1})
    start = {"type": "content_block_start", "index": index, "content_block": block}
    return stop + _sse("content_block_start", start)


ANTHROPIC = AnthropicFormat()
