"""Internal messages -> the message dicts that Hugging Face chat templates expect,
and the size checks made on them before anything is tokenized."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ContextLengthExceeded, PayloadTooLarge, UnsupportedFeature
from ..types import (
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
)


def template_messages(messages: list[Message], model_name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            text = _text_of(message.content, model_name)
            if out and out[-1]["role"] == "system":
                # Several system blocks (Anthropic) or messages (OpenAI) in a row:
                # one system turn, as most templates accept only one.
                out[-1]["content"] += "\n\n" + text
            else:
                out.append({"role": "system", "content": text})
            continue
        texts: list[str] = []
        has_results = False
        tool_calls: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ThinkingPart):
                continue  # earlier reasoning is not fed back to the model
            elif isinstance(part, ToolCallPart):
                tool_calls.append(
                    {
                        "id": part.id,
                        "type": "function",
                        "function": {"name": part.name, "arguments": _json_arguments(part)},
                    }
                )
            elif isinstance(part, ToolResultPart):
                # Each result becomes its own tool message, as templates expect.
                has_results = True
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": part.tool_call_id,
                        "content": _text_of(part.content, model_name),
                    }
                )
            elif isinstance(part, ImagePart):
                raise _no_images(model_name)
        # Tool results were emitted above as tool messages; what is left of a
        # message that carried only results is nothing.
        if message.role != "tool" and (texts or tool_calls or not has_results):
            entry: dict[str, Any] = {"role": message.role, "content": "\n".join(texts)}
            if tool_calls:
                entry["tool_calls"] = tool_calls
            out.append(entry)
    return out


# Tokenizing costs about 250 bytes of memory per character of prompt (a 19 MiB
# prompt peaked at 5 GB): no prompt longer than this is tokenized, for a count
# or a generation (413). Far more than any local model's context holds.
MAX_TOKENIZE_CHARS = 1 << 20


def longest_token(tokenizer: Any) -> int:
    """Characters of the vocabulary's longest entry: no token stands for more
    text (a byte-level entry is one character per byte; special tokens count)."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # a tokenizer without a vocabulary: no bound from it
        return 1 << 30
    return max((len(entry) for entry in vocab), default=1 << 30) or 1


def check_size(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    model_name: str,
    context_length: int,
    longest: int,
    generating: bool,
) -> None:
    """Refuse, before tokenizing, a prompt too large to tokenize (413) or, when
    generating, one that cannot fit the context whatever its tokens: it has at
    least characters / longest-token tokens."""
    chars = sum(len(m["content"]) for m in messages) + (len(json.dumps(tools)) if tools else 0)
    chars += sum(len(json.dumps(m["tool_calls"])) for m in messages if "tool_calls" in m)
    if chars > MAX_TOKENIZE_CHARS:
        raise PayloadTooLarge(
            f"the prompt has {chars} characters; local model {model_name!r} tokenizes at "
            f"most {MAX_TOKENIZE_CHARS}",
        )
    at_least = chars // longest
    if generating and at_least >= context_length:
        raise ContextLengthExceeded(
            f"the prompt is at least {at_least} tokens; model {model_name!r} has a context "
            f"of {context_length} tokens",
            param="messages",
        )


def template_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


def _text_of(parts: list[Any], model_name: str) -> str:
    chunks: list[str] = []
    for part in parts:
        if isinstance(part, ImagePart):
            raise _no_images(model_name)
        if isinstance(part, TextPart):
            chunks.append(part.text)
    return "\n".join(chunks)  # separate blocks stay apart, as vLLM and others join them


def _json_arguments(part: ToolCallPart) -> Any:
    # Templates render arguments themselves; most expect a mapping.
    try:
        return json.loads(part.arguments) if part.arguments else {}
    except json.JSONDecodeError:
        return part.arguments


def _no_images(model_name: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"model {model_name!r} is a text-only local model and cannot take images",
        param="messages",
    )
