"""Per-request samplers with their own random stream.

mlx-lm's samplers draw from MLX's global random state, which every sequence
in a batch shares; a request's `seed` would then depend on its neighbours.
Each sampler here carries its own key, split once per step.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_k, apply_top_p


def make_sampler(
    temperature: float, top_p: float, top_k: int, seed: int
) -> Callable[[mx.array], mx.array]:
    """A sampler for `temperature > 0`; temperature 0 is greedy and needs none."""
    key = mx.random.key(seed % 2**64)  # any integer seed: MLX keys are 64-bit unsigned
    inverse_temperature = 1.0 / temperature

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, step_key = mx.random.split(key)
        if top_p <= 0:
            # No probability mass at all: only the most likely token is left.
            return mx.argmax(logprobs, axis=-1)
        if top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        if 0 < top_k < logprobs.shape[-1]:
            logprobs = apply_top_k(logprobs, top_k)
        return mx.random.categorical(logprobs * inverse_temperature, key=step_key)

    return sample
