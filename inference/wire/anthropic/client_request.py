"""An Anthropic Messages request (or count_tokens body) from a client -> the
internal request, and the client headers an Anthropic upstream needs too."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ...errors import InvalidRequest
from ...types import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    Reasoning,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
)
from ..common import extensions, validation_message
from .schemas import (
    BLOCK_TYPES,
    Base64Source,
    ContentBlock,
    CountTokensRequest,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    OtherBlock,
    OtherSource,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingParam,
    ToolChoiceParam,
    ToolResultBlock,
    ToolUseBlock,
)

# Fields of the wire request that the internal form models; the rest are
# protocol extensions a backend must either honour or refuse. Extensions are
# named by where they are ("context_management", "messages.0.content.2
# (document block)"), so a refusal can say where.
_MODELLED = {
    "model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p",
    "top_k", "stream", "tools", "tool_choice", "metadata", "thinking",
}  # fmt: skip
# Values that are the same as not asking for the feature at all.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "service_tier": ("auto", None),
    "mcp_servers": ([], None),
}
# Labels pydantic puts into error locations for the branches of a union.
_BLOCK_TAGS = {*BLOCK_TYPES, "other"}
_SOURCE_TAGS = {"base64", "url", "other"}
_Schema = TypeVar("_Schema", bound=BaseModel)


def parse_request(data: Any) -> ChatRequest:
    """Validate a /v1/messages body into the internal request."""
    wire = _validate(MessagesRequest, data)
    request = _prompt(wire, data)
    request.max_tokens = wire.max_tokens
    request.temperature = wire.temperature
    request.top_p = wire.top_p
    request.top_k = wire.top_k
    request.stop = list(wire.stop_sequences or [])
    request.stream = wire.stream
    if wire.metadata is not None:
        request.metadata = wire.metadata.model_dump(exclude_none=True)
        request.user = wire.metadata.user_id
    return request


def parse_count_request(data: Any) -> ChatRequest:
    """Validate a /v1/messages/count_tokens body: the prompt part of a request.

    Generation settings (max_tokens, temperature...) do not change the prompt;
    clients that send their whole request body here get them ignored, not refused.
    """
    wire = _validate(CountTokensRequest, data)
    return _prompt(wire, data)


# Client headers an Anthropic upstream needs as well: the betas the body relies on.
FORWARDED_HEADERS = ("anthropic-beta",)


def forwarded_headers(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}


def _validate(schema: type[_Schema], data: Any) -> _Schema:
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(_readable(exc.errors(include_url=False)))
        raise InvalidRequest(message, param=param) from None


def _readable(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors with union-branch labels taken out of the locations.

    A bad content block fails both branches of `str | list[block]`; the string
    branch's "Input should be a valid string" would hide the real problem, and
    labels like "list[tagged-union[...]]" or a block's type tag are noise.
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        loc: list[Any] = []
        tagged = False  # inside a list of blocks: an item's type tag follows its index
        for segment in error["loc"]:
            previous = loc[-1] if loc else None
            if segment == "str":
                continue
            if isinstance(segment, str) and "[" in segment:
                tagged = "tagged-union[" in segment
            elif tagged and isinstance(previous, int) and segment in _BLOCK_TAGS:
                tagged = False
            elif not (previous == "source" and segment in _SOURCE_TAGS):
                loc.append(segment)
        out.append({"loc": tuple(loc), "msg": error["msg"], "str": "str" in error["loc"]})
    specific = [e for e in out if not e["str"]]
    return specific or out


def _prompt(wire: CountTokensRequest, data: dict[str, Any]) -> ChatRequest:
    unmodelled: dict[str, Any] = {}  # what only an Anthropic upstream can take
    messages: list[Message] = []
    if isinstance(wire.system, str):
        messages.append(Message("system", [TextPart(wire.system)]))
    else:
        # One message per block, not joined: an Anthropic upstream then gets
        # the blocks back as the client sent them.
        messages.extend(Message("system", [TextPart(b.text)]) for b in wire.system or [])
    messages.extend(_message(m, i, unmodelled) for i, m in enumerate(wire.messages))
    tools: list[ToolSpec] = []
    for i, tool in enumerate(wire.tools or []):
        if tool.custom:
            tools.append(ToolSpec(tool.name, tool.description, tool.input_schema or {}))
        else:
            unmodelled[f"tools.{i} ({tool.type} server tool)"] = tool.name
    reasoning = _reasoning(wire.thinking, unmodelled)
    return ChatRequest(
        model=wire.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(wire.tool_choice),
        reasoning=reasoning,
        extensions={**extensions(data, _MODELLED, _NEUTRAL), **unmodelled},
        source_protocol="anthropic",
        raw=data,
    )


def _reasoning(thinking: ThinkingParam | None, unmodelled: dict[str, Any]) -> Reasoning | None:
    if thinking is None:
        return None
    if thinking.type == "enabled":
        return Reasoning(enabled=True, budget_tokens=thinking.budget_tokens)
    if thinking.type == "disabled":
        return Reasoning(enabled=False)
    unmodelled[f"thinking ({thinking.type} thinking)"] = thinking.type
    return None


def _message(wire: MessageParam, index: int, unmodelled: dict[str, Any]) -> Message:
    if isinstance(wire.content, str):
        return Message(wire.role, [TextPart(wire.content)])
    parts: list[Part] = []
    for j, block in enumerate(wire.content):
        part = _part(block, f"messages.{index}.content.{j}", unmodelled)
        if part is not None:
            parts.append(part)
    return Message(wire.role, parts)


def _part(block: ContentBlock, param: str, unmodelled: dict[str, Any]) -> Part | None:
    if isinstance(block, TextBlock):
        return TextPart(block.text)
    if isinstance(block, ImageBlock):
        return _image(block, param, unmodelled)
    if isinstance(block, ToolUseBlock):
        return ToolCallPart(block.id, block.name, json.dumps(block.input, ensure_ascii=False))
    if isinstance(block, ToolResultBlock):
        content = block.content
        if isinstance(content, str):
            inner: list[TextPart | ImagePart] = [TextPart(content)]
        else:
            inner = []
            for item in content or []:
                if isinstance(item, TextBlock):
                    inner.append(TextPart(item.text))
                elif isinstance(item, ImageBlock):
                    inner.append(_image(item, param, unmodelled))
                else:
                    unmodelled[f"{param} ({item.type} block)"] = item.type
        return ToolResultPart(block.tool_use_id, inner, is_error=block.is_error)
    if isinstance(block, ThinkingBlock):
        return ThinkingPart(block.thinking, block.signature or None)
    if isinstance(block, RedactedThinkingBlock):
        # Encrypted reasoning only Anthropic itself can read, and the internal
        # form has no place for it: dropped (an upstream then sees no thinking).
        return None
    if isinstance(block, OtherBlock):
        unmodelled[f"{param} ({block.type} block)"] = block.type
        return None
    raise InvalidRequest(f"{param}: unsupported content block", param=param)


def _image(block: ImageBlock, param: str, unmodelled: dict[str, Any]) -> ImagePart:
    source = block.source
    if isinstance(source, Base64Source):
        return ImagePart(media_type=source.media_type, data=source.data)
    if isinstance(source, OtherSource):
        unmodelled[f"{param}.source ({source.type} image source)"] = source.type
        return ImagePart()
    return ImagePart(url=source.url)


def _tool_choice(choice: ToolChoiceParam | None) -> ToolChoice | None:
    if choice is None:
        return None
    if choice.type == "tool" and not choice.name:
        raise InvalidRequest(
            "tool_choice.name is required when tool_choice.type is 'tool'",
            param="tool_choice.name",
        )
    return ToolChoice(
        choice.type,
        name=choice.name if choice.type == "tool" else None,
        parallel=not choice.disable_parallel_tool_use,
    )
