"""Token counts for backends that cannot count: a documented estimate."""

from __future__ import annotations

import json
import math

from .types import ChatRequest, ImagePart, TextPart, ThinkingPart, ToolCallPart, ToolResultPart

# What Anthropic charges for an image of about 1.15 megapixels, the size it
# scales larger images down to; the gateway never decodes images to know better.
IMAGE_TOKENS = 1600


def estimate_tokens(request: ChatRequest) -> int:
    """An estimate for backends that cannot count: ceil(characters / 4).

    Characters counted: every text of every message (system prompt, text,
    thinking, text inside tool results), each tool call's name and JSON
    arguments, and each tool definition (name, description, input schema) as
    compact JSON. Each image adds a flat IMAGE_TOKENS. Four characters per
    token is the usual rule of thumb for English under BPE tokenizers: it
    errs high for code-light prose and low for CJK text, and ignores the
    few tokens of per-message framing a chat template adds.
    """
    chars = 0
    images = 0
    for message in request.messages:
        for part in message.content:
            if isinstance(part, TextPart | ThinkingPart):
                chars += len(part.text)
            elif isinstance(part, ToolCallPart):
                chars += len(part.name) + len(part.arguments)
            elif isinstance(part, ToolResultPart):
                for inner in part.content:
                    if isinstance(inner, TextPart):
                        chars += len(inner.text)
                    else:
                        images += 1
            elif isinstance(part, ImagePart):
                images += 1
    for tool in request.tools:
        spec = {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
        chars += len(json.dumps(spec, ensure_ascii=False, separators=(",", ":")))
    return math.ceil(chars / 4) + images * IMAGE_TOKENS
