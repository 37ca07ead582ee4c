"""How much of a waiting prompt one engine step prefills, per loaded model.

mlx-lm's `BatchGenerator.next()` already interleaves: each call runs one decode
step for the sequences that are generating, then one prefill chunk of at most
`prefill_step_size` tokens per prompt being processed. With a fixed chunk sized
for throughput (2048 tokens), a long prompt arriving while others stream stalls
them for the whole chunk: seconds on a CPU. So while any sequence is decoding,
the chunk is sized from this model's measured prefill rate to take about as
long as one decode step (never below `MIN_CHUNK` tokens): running streams keep
roughly half their token rate and the new prompt still gets half the engine.
With nobody decoding the full `prefill_step_size` is used, as before.

State is per loaded model (rates differ between models); only the engine
thread touches it. `prefill_step_size` is a public attribute of the generator,
read on each `next()` call.
"""

from __future__ import annotations

from typing import Any

MIN_CHUNK = 32  # below this a chunk's fixed cost dominates
MIN_SLICE_SECONDS = 0.02  # a decode step faster than this still leaves prefill some room
_SMOOTHING = 0.3  # weight of the newest reading in the moving averages


class PrefillPacer:
    def __init__(self, max_chunk: int) -> None:
        self.max_chunk = max(1, max_chunk)
        self.prefill_tps = 0.0  # prompt tokens per second, all prompts of a chunk together
        self.decode_seconds = 0.0  # one decode step

    def chunk(self, *, decoding: bool, prefilling: int) -> int:
        """Tokens per prompt for the next step; `prefilling` prompts share the slice."""
        if not decoding:
            return self.max_chunk
        if self.prefill_tps <= 0:
            return MIN_CHUNK  # rate not measured yet: start small, it is measured now
        budget = max(self.decode_seconds, MIN_SLICE_SECONDS) * self.prefill_tps
        per_prompt = int(budget / max(1, prefilling))
        return max(MIN_CHUNK, min(self.max_chunk, per_prompt))

    def observe(self, work: Any) -> None:
        """Fold in one step's `BatchStats` (from `BatchGenerator.stats()`)."""
        if work.prompt_tokens and work.prompt_time > 0:
            self.prefill_tps = _average(self.prefill_tps, work.prompt_tokens / work.prompt_time)
        if work.generation_steps and work.decode_time > 0:
            step = work.decode_time / work.generation_steps
            self.decode_seconds = _average(self.decode_seconds, step)


def _average(old: float, new: float) -> float:
    return new if old <= 0 else old + _SMOOTHING * (new - old)
