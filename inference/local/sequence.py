"""One request's sequence as the engine thread tracks it, and its way back to the loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..errors import EngineError
from .chunks import Chunk, GenerationParams
from .model import LoadedModel
from .stops import StopMatcher


@dataclass(eq=False, slots=True)
class Sequence:
    model: LoadedModel
    prompt: list[int]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    inbox: asyncio.Queue[Chunk] = field(default_factory=asyncio.Queue)
    uid: int | None = None
    detokenizer: Any = None
    stops: StopMatcher | None = None
    generated: int = 0
    cached: int = 0  # prompt tokens taken from the prompt cache
    done: bool = False

    def advance(self, token: int, finish: str | None) -> Chunk:
        """The chunk one generated token makes: text so far held back by stops, and the end."""
        detok = self.detokenizer
        self.generated += 1
        n = self.generated
        eos = finish == "stop" and token in self.model.eos_token_ids
        if not eos:
            detok.add_token(token)
        if finish is not None:
            detok.finalize()
        assert self.stops is not None
        text, hit = self.stops.feed(detok.last_segment)
        if hit is not None:
            return Chunk(text, n, finish_reason="stop_sequence", stop_sequence=hit)
        if finish is not None:
            return Chunk(text + self.stops.flush(), n, finish_reason=finish)
        return Chunk(text, n)


def engine_error(exc: BaseException) -> EngineError:
    return EngineError(f"local inference failed: {type(exc).__name__}: {exc}")


def deliver(items: list[tuple[Sequence, Chunk]]) -> None:
    for seq, chunk in items:
        seq.inbox.put_nowait(chunk)
