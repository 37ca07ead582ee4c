"""OpenAI's chat-completions protocol: its shapes and every translation to and
from the internal form (see `inference.wire` for the four directions)."""

from .client_request import parse_request
from .client_response import StreamEncoder, completion_body
from .models import model_card, model_list
from .schemas import ChatCompletionRequest
from .upstream_request import client_wants_usage, request_body
from .upstream_response import StreamDecoder, result_of, usage_of

__all__ = [
    "ChatCompletionRequest",
    "StreamDecoder",
    "StreamEncoder",
    "client_wants_usage",
    "completion_body",
    "model_card",
    "model_list",
    "parse_request",
    "request_body",
    "result_of",
    "usage_of",
]
