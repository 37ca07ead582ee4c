"""How much of a waiting prompt one engine step prefills, per loaded model.

mlx-lm's `BatchGenerator.next()` already interleaves: each call runs one decode
step for the sequences that are generating, then one prefill chunk of at most
`prefill_step_size` tokens per prompt being processed. With a fixed chunk sized
for throughput (2048 tokens), a long prompt arriving while others stream stalls
them for the whole chunk: seconds on a CPU. So while any sequence is decoding,
the chunk is sized from this model's measured prefill rate to take about as
long as one decode step (never below `MIN_CHUNK` tokens): running streams keep
roughly half their token rate and the new prompt still gets half the engine.
With nobody decoding the full `prefill_step_size` is used, as before, but it
is reached in a ramp (MIN_CHUNK, doubling each step) that starts over whenever
a prompt arrives. Requests come in bursts (agents sharing a system prompt), a
newcomer joins the batch only between steps, and mlx-lm prefills a batch in
lockstep, padding the prompts that are ahead: one that joins after a 2,048-token
step leaves the first arrival 2,048 tokens ahead, and a short prompt that joins
a long one waits for its whole chunk. Measured with 4 concurrent conversations
sharing a 2,400-token system prompt (benchmarks/bench_prompt_cache.py) on the
2-core CPU, without the ramp: the first token of turn 1 came after 82 s against
mlx_lm.server's 50 s (which reads its whole queue before stepping), later turns
after 2.3 s against 0.8 s. In-process, 4 conversations of 4 turns took 15-16 s
paced against 22.8 s with fixed 2,048-token chunks. Prompts that need at most
RAMP_ABOVE tokens skip the ramp: a short one cannot run far ahead, and a cached
conversation's next turn (a few dozen new tokens) then goes in one step.

State is per loaded model (rates differ between models); only the engine
thread touches it. `prefill_step_size` is a public attribute of the generator,
read on each `next()` call.
"""

from __future__ import annotations

from typing import Any

# Measured on a 2-core CPU, demo model: a step costs ~20 ms plus ~3 ms a prompt
# token, so 8-token chunks lose 40% of the prefill rate and 32-token ones ~none.
MIN_CHUNK = 32
RAMP_ABOVE = 256
MIN_SLICE_SECONDS = 0.02  # a decode step faster than this still leaves prefill some room
_SMOOTHING = 0.3  # weight of the newest reading in the moving averages


class PrefillPacer:
    def __init__(self, max_chunk: int) -> None:
        self.max_chunk = max(1, max_chunk)
        self.prefill_tps = 0.0  # prompt tokens per second, all prompts of a chunk together
        self.decode_seconds = 0.0  # one decode step
        self._prefilling = 0  # prompts waiting at the previous step
        self._ramp = MIN_CHUNK  # the largest chunk allowed this step

    def chunk(self, *, decoding: bool, prefilling: int, longest: int = 0) -> int:
        """Tokens per prompt for the next step; `prefilling` prompts share the slice,
        the longest of which still has at most `longest` tokens to prefill."""
        if prefilling > self._prefilling and longest > RAMP_ABOVE:
            self._ramp = MIN_CHUNK  # others of its burst may be a moment behind
        else:
            self._ramp = min(self.max_chunk, self._ramp * 2)
        self._prefilling = prefilling
        if not decoding:
            return self._ramp
        if self.prefill_tps <= 0:
            return MIN_CHUNK  # rate not measured yet: start small, it is measured now
        budget = max(self.decode_seconds, MIN_SLICE_SECONDS) * self.prefill_tps
        per_prompt = int(budget / max(1, prefilling))
        return max(MIN_CHUNK, min(self._ramp, per_prompt))

    def observe(self, work: Any) -> None:
        """Fold in one step's `BatchStats` (from `BatchGenerator.stats()`)."""
        if work.prompt_tokens and work.prompt_time > 0:
            self.prefill_tps = _average(self.prefill_tps, work.prompt_tokens / work.prompt_time)
        if work.generation_steps and work.decode_time > 0:
            step = work.decode_time / work.generation_steps
            self.decode_seconds = _average(self.decode_seconds, step)


def _average(old: float, new: float) -> float:
    return new if old <= 0 else old + _SMOOTHING * (new - old)
