"""A gateway model server (`manage.py serve_models`) as a backend of the front tier.

The model server is this same gateway in model-server mode: its local models,
behind one key, on a loopback or private address. It speaks the gateway's own
OpenAI protocol, so the client is the OpenAI-compatible one, with what a
generic compatible server does not promise: a trailing assistant message is
continued (`continue_final_message`, which the model server's OpenAI endpoint
reads), and prompts are counted exactly by the model's own tokenizer, through
the gateway's `count_tokens` endpoint. Closing a stream closes its connection;
the model server stops the generation when its client goes away.
"""

from __future__ import annotations

from ..types import ChatRequest
from ..wire.anthropic import count_body
from .openai import OpenAIBackend
from .transport import post_json


class ModelServerBackend(OpenAIBackend):
    counts_tokens = True
    merge_system = True  # local chat templates refuse a second or late system message

    async def count_tokens(self, request: ChatRequest) -> int:
        # The gateway's count_tokens endpoint takes Anthropic's body; the key
        # goes as a bearer token, which that endpoint accepts too.
        body = count_body(request, self.model)
        data = await post_json(self.config, "/messages/count_tokens", body, self.deadline)
        return int(data.get("input_tokens") or 0)
