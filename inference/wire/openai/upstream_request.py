"""The internal request -> the chat-completions body the gateway sends an
OpenAI-compatible provider (OpenAI itself, vLLM, llama.cpp, Ollama, a model server)."""

from __future__ import annotations

from typing import Any

from ...errors import UnsupportedFeature
from ...types import ChatRequest, ImagePart, Message, TextPart, ToolCallPart, ToolResultPart


def request_body(
    request: ChatRequest,
    model: str,
    *,
    stream: bool,
    official: bool = False,
    merge_system: bool = False,
) -> dict[str, Any]:
    """The chat-completions body; `official`: the provider is OpenAI's own API;
    `merge_system`: every system text goes first, as one message (see wire_messages)."""
    if request.raw is not None and request.source_protocol == "openai":
        relayed = {**request.raw, "model": model}  # same protocol: untouched but the model
        if stream and not client_wants_usage(request):
            # Usage is what key limits and the request log count: asked for
            # always, and taken out again before the client sees the stream.
            options = relayed.get("stream_options") or {}
            relayed["stream_options"] = {**options, "include_usage": True}
        return relayed
    if request.extensions and request.source_protocol != "openai":
        raise UnsupportedFeature.of_extensions(request.extensions, "an OpenAI-compatible provider")
    messages = wire_messages(request.messages, merge_system=merge_system)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if official and request.top_k is not None:
        # Compatible servers (vLLM, llama.cpp, Ollama...) take top_k; OpenAI refuses it.
        raise UnsupportedFeature("OpenAI's own API has no top_k", param="top_k")
    options = {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "seed": request.seed,
        "user": request.user,
        "stop": request.stop or None,
        "reasoning_effort": _effort(request),
    }
    body.update({k: v for k, v in options.items() if v is not None})
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    choice = request.tool_choice
    if choice is not None and request.tools:  # OpenAI refuses a tool_choice without tools
        body["tool_choice"] = {
            "auto": "auto",
            "none": "none",
            "any": "required",
            "tool": {"type": "function", "function": {"name": choice.name}},
        }[choice.mode]
        if not choice.parallel:
            body["parallel_tool_calls"] = False
    if request.metadata and request.source_protocol == "openai":
        body["metadata"] = request.metadata
    if request.source_protocol == "openai":
        body.update(request.extensions)
    if request.continuation:
        # vLLM's and compatible servers' switch for continuing the last message.
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def wire_messages(messages: list[Message], *, merge_system: bool = False) -> list[dict[str, Any]]:
    """The messages as chat-completions takes them. System messages side by side
    (an Anthropic client's `system` blocks: one prompt) become one; a later one
    stays in its place, as the protocol allows. With `merge_system` every system
    text goes first as one message: what the chat templates of local models
    (Llama, Mistral...) demand, which refuse a second system message or one
    after the first turn (the gateway's model servers)."""
    out: list[dict[str, Any]] = []
    system = _system_message(messages) if merge_system else None
    if system is not None:
        out.append(system)
    for message in messages:
        if message.role == "system":
            if not merge_system:
                _add_system(out, message)
            continue
        content: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "image_url", "image_url": {"url": image_url(part)}})
            elif isinstance(part, ToolCallPart):
                calls.append(
                    {
                        "id": part.id,
                        "type": "function",
                        "function": {"name": part.name, "arguments": part.arguments or "{}"},
                    }
                )
            elif isinstance(part, ToolResultPart):
                out.append(_tool_message(part))
        role = message.role
        if role == "tool" or (not content and not calls and role != "assistant"):
            continue
        entry: dict[str, Any] = {"role": role, "content": _content(content)}
        if calls:
            entry["tool_calls"] = calls
            if not content:
                entry["content"] = None
        if message.name:
            entry["name"] = message.name
        out.append(entry)
    return out


def _add_system(out: list[dict[str, Any]], message: Message) -> None:
    text = "\n\n".join(p.text for p in message.content if isinstance(p, TextPart) and p.text)
    if not text:
        return
    if out and out[-1]["role"] == "system":  # right after another: the same prompt
        out[-1]["content"] += "\n\n" + text
    else:
        out.append({"role": "system", "content": text})


def _system_message(messages: list[Message]) -> dict[str, Any] | None:
    """Every system text as one system message (wire_messages' `merge_system`)."""
    texts = [
        part.text
        for message in messages
        if message.role == "system"
        for part in message.content
        if isinstance(part, TextPart) and part.text
    ]
    return {"role": "system", "content": "\n\n".join(texts)} if texts else None


def _tool_message(part: ToolResultPart) -> dict[str, Any]:
    """OpenAI carries each tool result as its own "tool" message, of text only."""
    if any(isinstance(p, ImagePart) for p in part.content):
        raise UnsupportedFeature(
            "an OpenAI-compatible provider takes no images in tool results", param="messages"
        )
    text = "\n".join(p.text for p in part.content if isinstance(p, TextPart))
    if part.is_error:
        text = f"Error: {text}" if text else "Error"  # OpenAI has no is_error flag
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": text}


# Anthropic's thinking budget as OpenAI's reasoning effort.
def _effort(request: ChatRequest) -> str | None:
    reasoning = request.reasoning
    if reasoning is None or not reasoning.enabled:
        return None  # not every model knows "none": off is not asking
    if reasoning.effort:
        return reasoning.effort
    budget = reasoning.budget_tokens or 0
    return "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"


def client_wants_usage(request: ChatRequest) -> bool:
    options = (request.raw or {}).get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # A plain string where possible: every OpenAI-compatible server takes it.
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) <= 1 else parts
    return parts


def image_url(part: ImagePart) -> str:
    if part.url:
        return part.url
    return f"data:{part.media_type or 'image/png'};base64,{part.data}"
