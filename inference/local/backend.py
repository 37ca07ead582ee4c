"""The local backend: the `Backend` interface over the MLX engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from jinja2 import TemplateError

from ..base import Capabilities, collect
from ..errors import ContextLengthExceeded, InvalidRequest, UnsupportedFeature
from ..types import ChatRequest, ChatResult, Event, Finish, FinishReason, PromptUsage, Usage
from .engine import Engine, GenerationParams
from .model import LoadedModel, ModelSpec
from .output import OutputParser
from .prompt import check_size, template_messages, template_tools

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "stop_sequence": "stop_sequence",
}


@dataclass(frozen=True, slots=True)
class Defaults:
    """A local model's defaults, used only where the request says nothing."""

    max_tokens: int = 512
    temperature: float | None = None
    top_p: float | None = None


class LocalBackend:
    def __init__(
        self,
        engine: Engine,
        spec: ModelSpec,
        defaults: Defaults | None = None,
        *,
        prefill: bool = True,
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.defaults = defaults or Defaults()
        self.name = f"local:{spec.name}"
        # Text only; a trailing assistant message is continued (continue_final_message).
        self.capabilities = Capabilities(prefill=prefill, count_tokens=True, images=False)

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.spec.name, self.stream(request))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        async with self.engine.lease(self.spec) as model:
            prompt = await self.prompt_tokens(model, request)
            params = self._params(request, model, len(prompt))
            tools = template_tools(request.tools) if request.tools else None
            if request.tool_choice is not None and request.tool_choice.mode == "none":
                tools = None
            parser = OutputParser(model.tokenizer, tools=tools, prompt=prompt)
            chunks = self.engine.generate(model, prompt, params)
            cached: int | None = None
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if cached is None:
                        # The engine's first chunk says how much of the prompt it reused.
                        cached = chunk.cached_tokens or 0
                        yield PromptUsage(len(prompt), cached_tokens=cached)
                    if chunk.text:
                        for event in parser.feed(chunk.text):
                            yield event
                    if chunk.finish_reason is not None:
                        for event in parser.finish():
                            yield event
                        reason = _FINISH[chunk.finish_reason]
                        if parser.tool_calls and reason == "stop":
                            reason = "tool_calls"
                        yield Finish(
                            reason=reason,
                            usage=Usage(
                                input_tokens=len(prompt),
                                output_tokens=chunk.tokens,
                                cached_tokens=cached,
                            ),
                            stop_sequence=chunk.stop_sequence,
                        )

    async def count_tokens(self, request: ChatRequest) -> int:
        async with self.engine.lease(self.spec) as model:
            return len(await self.prompt_tokens(model, request, generating=False))

    async def prompt_tokens(
        self, model: LoadedModel, request: ChatRequest, *, generating: bool = True
    ) -> list[int]:
        """The prompt as the model's chat template renders it. Counting asks
        only for its length: what could not be generated can still be counted."""
        if request.extensions:
            raise UnsupportedFeature.of_extensions(
                request.extensions, f"local model {self.spec.name!r}"
            )
        if request.tools and not model.has_tool_calling:
            raise UnsupportedFeature(
                f"model {self.spec.name!r} has no tool-calling chat template", param="tools"
            )
        messages = template_messages(request.messages, self.spec.name)
        tools = template_tools(request.tools) if request.tools else None
        choice = request.tool_choice
        if generating and choice is not None and choice.mode in ("any", "tool") and tools:
            # Nothing here can force a local model to call a tool.
            raise UnsupportedFeature(
                f"local model {self.spec.name!r} cannot be forced to call a tool "
                f"(tool_choice {choice.mode!r}); use auto or none",
                param="tool_choice",
            )
        if choice is not None and choice.mode == "none":
            tools = None
        check_size(
            messages,
            tools,
            model_name=self.spec.name,
            context_length=model.context_length,
            longest=model.longest_token,
            generating=generating,
        )
        # Templates are Jinja and tokenizing is CPU work: keep both off the loop.
        try:
            thinking = request.reasoning.enabled if request.reasoning is not None else None
            prompt = await asyncio.to_thread(model.encode_chat, messages, tools, thinking)
        except TemplateError as exc:
            # Templates enforce their own rules (roles must alternate, one
            # system message first...): the caller's messages broke one.
            raise InvalidRequest(
                f"the chat template of model {self.spec.name!r} rejected the messages: {exc}",
                param="messages",
            ) from None
        if generating and len(prompt) >= model.context_length:
            raise ContextLengthExceeded(
                f"the prompt is {len(prompt)} tokens; model {self.spec.name!r} "
                f"has a context of {model.context_length} tokens",
                param="messages",
            )
        return prompt

    def _params(
        self, request: ChatRequest, model: LoadedModel, prompt_len: int
    ) -> GenerationParams:
        room = model.context_length - prompt_len
        max_tokens = (
            request.max_tokens if request.max_tokens is not None else self.defaults.max_tokens
        )
        # Explicit `is None` checks: temperature 0 means greedy, not "unset".
        temperature = request.temperature
        if temperature is None:
            temperature = (
                self.defaults.temperature if self.defaults.temperature is not None else 1.0
            )
        top_p = request.top_p
        if top_p is None:
            top_p = self.defaults.top_p if self.defaults.top_p is not None else 1.0
        return GenerationParams(
            max_tokens=max(1, min(max_tokens, room)),
            temperature=temperature,
            top_p=top_p,
            top_k=request.top_k or 0,
            seed=request.seed,
            stop=tuple(request.stop),
        )
