"""A local model's raw text -> text, reasoning and real tool calls.

The markers come from the tokenizer (mlx-lm infers them from the chat
template), the call syntax from mlx-lm's tool parser for that template.
Matching is on text, so a marker split across chunks is still found.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from mlx_lm.generate import TextStateMachine

from ..types import Event, TextDelta, ThinkingDelta, ToolCallDelta


class OutputParser:
    def __init__(
        self, tokenizer: Any, *, tools: list[dict[str, Any]] | None, prompt: list[int]
    ) -> None:
        transitions: dict[str, list[tuple[str, str]]] = {"normal": []}
        if getattr(tokenizer, "has_thinking", False):
            transitions["normal"].append((tokenizer.think_start, "reasoning"))
            transitions["reasoning"] = [(tokenizer.think_end, "normal")]
        self._parser = None
        if tools and getattr(tokenizer, "has_tool_calling", False) and tokenizer.tool_parser:
            self._parser = tokenizer.tool_parser
            transitions["normal"].append((tokenizer.tool_call_start, "tool"))
            end = tokenizer.tool_call_end
            transitions["tool"] = [(end, "normal")] if end else []
        self._tools = tools
        initial = "normal"
        think_start = getattr(tokenizer, "think_start_id", None)
        if (
            "reasoning" in transitions
            and prompt
            and think_start is not None
            and prompt[-1] == think_start
        ):
            initial = "reasoning"  # the template opened the thinking block itself
        self._machine = TextStateMachine(transitions)
        self._state = self._machine.make_state(initial)
        self._prev = initial
        self._tool_text = ""
        self.tool_calls = 0

    def feed(self, text: str) -> Iterator[Event]:
        self._state, segments = TextStateMachine.split(self._state, text)
        yield from self._segments(segments)

    def finish(self) -> Iterator[Event]:
        self._state, rest, current = TextStateMachine.flush(self._state)
        yield from self._segments([(current, rest)])
        if self._tool_text:
            yield from self._close_tool()

    def _segments(self, segments: list[tuple[str | None, str]]) -> Iterator[Event]:
        for state, text in segments:
            if self._prev == "tool" and state != "tool":
                yield from self._close_tool()
            if state == "tool":
                self._tool_text += text
            elif text and state == "reasoning":
                yield ThinkingDelta(text)
            elif text:
                yield TextDelta(text)
            self._prev = state or "normal"

    def _close_tool(self) -> Iterator[Event]:
        raw, self._tool_text = self._tool_text, ""
        try:
            parsed = self._parser(raw, self._tools) if self._parser else None
        except (ValueError, KeyError, TypeError):
            parsed = None
        calls = parsed if isinstance(parsed, list) else [parsed] if parsed else []
        if not calls or not all(isinstance(c, dict) and c.get("name") for c in calls):
            # Not a call the parser understands: keep the text rather than lose it.
            yield TextDelta(raw)
            return
        for call in calls:
            arguments = call.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
            yield ToolCallDelta(self.tool_calls, call_id, str(call["name"]), arguments)
            self.tool_calls += 1
