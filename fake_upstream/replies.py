"""What the fake answers, independent of wire format.

The answer is a pure function of the request so tests can assert on it: the text
is ``echo: <last user or tool text>``, cut or padded with filler words to the
reply length, then cut to ``max_tokens`` words. One word is one token, both for
input (words in the prompt) and output (words emitted), so usage stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

FILLER = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
]
ARG_PIECE_CHARS = 8  # argument JSON is streamed in pieces this long, like real deltas


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str
    pieces: list[str]

    @property
    def input(self) -> Any:
        return orjson.loads(self.arguments)


@dataclass(slots=True)
class Reply:
    """Content tokens (``pieces``, or the tool calls' argument pieces) and their accounting."""

    pieces: list[str]
    tools: list[ToolCall]  # several when the prompt asks for "all tools" in parallel
    finish: str  # "stop", "length", "stop_sequence" or "tool"
    stop_sequence: str | None
    input_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> list[str]:
        if self.tools:
            return [piece for call in self.tools for piece in call.pieces]
        return self.pieces

    @property
    def output_tokens(self) -> int:
        return len(self.tokens)


def content_text(content: Any) -> str:
    """Plain text of a message content in either protocol (string or list of parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif part.get("type") == "tool_result":
            texts.append(content_text(part.get("content")))
    return " ".join(texts)


def count_words(messages: list[Any], system: Any = None) -> int:
    total = len(content_text(system).split())
    for message in messages:
        if isinstance(message, dict):
            total += len(content_text(message.get("content")).split())
    return total


def echo_source(messages: list[Any]) -> str:
    """Text the answer echoes: the newest non-assistant message that has any."""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") == "assistant":
            continue
        text = content_text(message.get("content"))
        if text.strip():
            return text
    return ""


def trailing_assistant_text(messages: Any) -> str:
    """The text of a last assistant message (a prefill to continue), else ""."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return ""
    last = messages[-1]
    return content_text(last.get("content")) if last.get("role") == "assistant" else ""


def ends_with_user_turn(messages: list[Any]) -> bool:
    """A tool is called only for a fresh user turn, so tool results get a text answer."""
    if not messages or not isinstance(messages[-1], dict):
        return False
    last = messages[-1]
    if last.get("role") != "user":
        return False
    content = last.get("content")
    if isinstance(content, list):
        return not any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content)
    return True


def plan_text(
    source: str,
    *,
    words: int,
    max_tokens: int | None,
    stop: list[str],
    input_tokens: int,
    prefill: str = "",
) -> Reply:
    reply = ["echo:", *source.split()][:words]
    if len(reply) < words:
        need = words - len(reply)
        reply += (FILLER * (need // len(FILLER) + 1))[:need]
    done = prefill.split()
    if done and reply[: len(done)] == done:
        reply = reply[len(done) :]  # a prefill is continued: the rest of the answer
    finish = "stop"
    if max_tokens is not None and max_tokens < len(reply):
        reply = reply[:max_tokens]
        finish = "length"
    stop_hit: str | None = None
    if stop:
        text = " ".join(reply)
        cut = min(((text.find(s), s) for s in stop if s and s in text), default=None)
        if cut is not None:
            reply = text[: cut[0]].split()
            finish, stop_hit = "stop_sequence", cut[1]
    pieces = [word if i == 0 and not done else " " + word for i, word in enumerate(reply)]
    return Reply(pieces, [], finish, stop_hit, input_tokens)


PARALLEL_CUE = "all tools"  # a prompt with these words gets every tool called at once


def plan_tools(picked: list[tuple[str, Any]], source: str, input_tokens: int) -> Reply:
    calls = []
    for name, schema in picked:
        arguments = orjson.dumps(tool_arguments(schema, source)).decode()
        step = ARG_PIECE_CHARS
        pieces = [arguments[i : i + step] for i in range(0, len(arguments), step)]
        calls.append(ToolCall(name, arguments, pieces))
    return Reply([], calls, "tool", None, input_tokens)


def choose_tools(
    named: list[tuple[str, Any]], source: str, parallel: bool
) -> list[tuple[str, Any]]:
    """The first tool; every one when the prompt asks for all and parallel calls are allowed."""
    if parallel and PARALLEL_CUE in source.lower():
        return named
    return named[:1]


def tool_arguments(schema: Any, source: str) -> dict[str, Any]:
    """Arguments that satisfy a simple JSON schema, derived from the prompt text."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    required = schema.get("required")
    names = required if isinstance(required, list) and required else list(props)
    return {str(name): _value_for(props.get(name), source) for name in names}


def _value_for(prop: Any, source: str) -> Any:
    prop = prop if isinstance(prop, dict) else {}
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {
        "integer": len(source.split()),
        "number": float(len(source.split())),
        "boolean": True,
        "array": [],
        "object": {},
        "null": None,
    }.get(str(kind), source)


def parse_stop(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str)]
    return []
