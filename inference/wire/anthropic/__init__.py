"""Anthropic's Messages protocol: its shapes and every translation to and from
the internal form (see `inference.wire` for the four directions)."""

from .client_request import forwarded_headers, parse_count_request, parse_request
from .client_response import (
    STOP_REASONS,
    StreamEncoder,
    count_tokens_body,
    message_body,
    tool_input,
)
from .models import model_card, model_list, paginate
from .schemas import CountTokensRequest, MessagesRequest
from .upstream_request import DEFAULT_MAX_TOKENS, count_body, request_body
from .upstream_response import StreamDecoder, result_of, usage_of

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "STOP_REASONS",
    "CountTokensRequest",
    "MessagesRequest",
    "StreamDecoder",
    "StreamEncoder",
    "count_body",
    "count_tokens_body",
    "forwarded_headers",
    "message_body",
    "model_card",
    "model_list",
    "paginate",
    "parse_count_request",
    "parse_request",
    "request_body",
    "result_of",
    "tool_input",
    "usage_of",
]
