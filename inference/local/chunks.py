"""What goes into the engine and comes out of it, per sequence and in all."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class Chunk:
    """Text produced since the previous chunk, and how the sequence ended."""

    text: str
    tokens: int  # tokens generated so far in this sequence
    finish_reason: str | None = None  # "stop", "length" or "stop_sequence"
    stop_sequence: str | None = None
    error: BaseException | None = None
    cached_tokens: int | None = None  # set once, when the engine accepts the sequence


@dataclass(slots=True)
class EngineStats:
    resident_models: list[str]
    loading_models: list[str]
    active_sequences: int
    queued_requests: int
    decode_steps: int  # batched decoding steps run, all models together
    prompt_tokens_processed: int  # prompt tokens run through a model (prefill)
    generated_tokens: int
    failed_models: dict[str, str] = field(default_factory=dict)  # name: last load error
    # The prompt cache (process-wide, all models): lookups and hits since start.
    prompt_cache_lookups: int = 0
    prompt_cache_hits: int = 0
    prompt_cache_tokens_reused: int = 0
    prompt_cache_bytes: int = 0
    prompt_cache_max_bytes: int = 0


def merge(a: Chunk, b: Chunk) -> Chunk:
    if b.error is not None:
        return b
    cached = a.cached_tokens if b.cached_tokens is None else b.cached_tokens
    return Chunk(a.text + b.text, b.tokens, b.finish_reason, b.stop_sequence, None, cached)
