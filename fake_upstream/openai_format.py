"""OpenAI Chat Completions wire format, as the official ``openai`` SDK parses it."""

from __future__ import annotations

import time
from typing import Any

import orjson

from .formats import (
    CREATED,
    StreamPlan,
    positive_int,
    require_messages,
)
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
_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}
_CONTEXT_WINDOW = 128_000

# status -> (type, code, message); the shapes the real API uses for these statuses.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "Request timed out."),
    413: ("invalid_request_error", None, "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    529: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _envelope(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _pick_tools(tools: list[Any], choice: Any) -> list[tuple[str, Any]]:
    wanted = None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
    picked = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function") or {}
        name = function.get("name")
        if isinstance(name, str) and (wanted is None or name == wanted):
            picked.append((name, function.get("parameters")))
    return picked


class OpenAIFormat:
    name = "openai"
    id_header = "x-request-id"
    overloaded_status = 503

    def error_body(self, status: int, message: str | None, rid: str, model: str | None) -> bytes:
        default = ("invalid_request_error", None, "Request failed.")
        if status >= 500:
            default = ("server_error", None, "The server had an error.")
        type_, code, text = _ERRORS.get(status, default)
        if status == 404 and model and message is None:
            text = f"The model `{model}` does not exist or you do not have access to it."
        return _envelope(message or text, type_, None, code)

    def auth_error(self, key: str | None, rid: str) -> bytes:
        if not key:
            return _envelope(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            )
        shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
        return _envelope(
            f"Incorrect API key provided: {shown}.",
            "invalid_request_error",
            None,
            "invalid_api_key",
        )

    def content_policy_body(self, rid: str) -> bytes:
        return _envelope(
            "Your request was rejected as a result of our safety system.",
            "invalid_request_error",
            None,
            "content_policy_violation",
        )

    def context_length_body(self, tokens: int, rid: str) -> bytes:
        return _envelope(
            f"This model's maximum context length is {_CONTEXT_WINDOW} tokens. However, your "
            f"messages resulted in {max(tokens, _CONTEXT_WINDOW + 1)} tokens. "
            "Please reduce the length of the messages.",
            "invalid_request_error",
            "messages",
            "context_length_exceeded",
        )

    def plan(self, body: dict[str, Any], words: int) -> Reply:
        messages = require_messages(body)
        max_tokens = positive_int(body, "max_completion_tokens", "max_tokens")
        input_tokens = count_words(messages)
        tools = body.get("tools")
        choice = body.get("tool_choice")
        source = echo_source(messages)
        if tools and isinstance(tools, list) and choice != "none" and ends_with_user_turn(messages):
            parallel = body.get("parallel_tool_calls") is not False
            picked = choose_tools(_pick_tools(tools, choice), source, parallel)
            if picked:
                return plan_tools(picked, source, input_tokens)
        stop = parse_stop(body.get("stop"))
        return plan_text(
            source,
            words=words,
            max_tokens=max_tokens,
            stop=stop,
            input_tokens=input_tokens,
            prefill=trailing_assistant_text(messages),
        )

    def message_body(self, reply: Reply, model: str, rid: str) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if reply.tools else reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tools:
            message["tool_calls"] = [
                {
                    "id": f"call_{rid}_{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(reply.tools)
            ]
        return _dumps(
            {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _FINISH[reply.finish],
                    }
                ],
                "usage": _usage(reply),
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        )

    def stream(self, reply: Reply, model: str, rid: str, body: dict[str, Any]) -> StreamPlan:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        base: dict[str, Any] = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        # Content chunks are the hot path: splice each piece into a prebuilt frame
        # instead of serialising a whole dict per token.
        head = _dumps(base)[:-1] + b',"choices":[{"index":0,"delta":'
        tail = b',"logprobs":null,"finish_reason":null}]'
        tail += b',"usage":null}\n\n' if include_usage else b"}\n\n"

        def event(choices: list[Any], usage: Any = None) -> bytes:
            data = {**base, "choices": choices}
            if include_usage:
                data["usage"] = usage
            return b"data: " + _dumps(data) + b"\n\n"

        first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if reply.tools:
            # As OpenAI streams: the first call's id and name in the role chunk, each
            # later call's at its own index, and then each call's arguments.
            first["content"] = None
            openings = [
                {"index": i, "id": f"call_{rid}_{i}", "type": "function",
                 "function": {"name": call.name, "arguments": ""}}
                for i, call in enumerate(reply.tools)
            ]  # fmt: skip
            first["tool_calls"] = openings[:1]
            tokens = []
            for i, call in enumerate(reply.tools):
                frames = [
                    b'data: %b{"tool_calls":[{"index":%d,"function":{"arguments":%b}}]}%b'
                    % (head, i, _dumps(piece), tail)
                    for piece in call.pieces
                ]
                if i and frames:
                    opening = _dumps({"tool_calls": [openings[i]]})
                    frames[0] = b"data: %b%b%b" % (head, opening, tail) + frames[0]
                tokens += frames
        else:
            tokens = [
                b'data: %b{"content":%b}%b' % (head, _dumps(piece), tail) for piece in reply.pieces
            ]
        preamble = [event([{"index": 0, "delta": first, "logprobs": None, "finish_reason": None}])]
        finish = _FINISH[reply.finish]
        epilogue = [event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])]
        if include_usage:
            epilogue.append(event([], _usage(reply)))
        error = _envelope(_ERRORS[500][2], "server_error", None, None)
        return StreamPlan(
            preamble=preamble,
            tokens=tokens,
            epilogue=epilogue,
            terminator=[b"data: [DONE]\n\n"],
            malformed=b'data: {"id": "chatcmpl-' + rid.encode() + b'", this is not json\n\n',
            error=b"data: " + error + b"\n\n",
        )

    def models_body(self, models: list[str]) -> bytes:
        return _dumps({"object": "list", "data": [self._model(m) for m in models]})

    def model_body(self, model: str) -> bytes:
        return _dumps(self._model(model))

    @staticmethod
    def _model(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": CREATED, "owned_by": "fake-upstream"}


OPENAI = OpenAIFormat()
