"""A model folder on disk, and the model once loaded into memory."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prefill import PrefillPacer
from .prompt import longest_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Where a local model lives; a changed spec means a reload."""

    name: str
    path: str
    context_length: int | None = None


class LoadedModel:
    """Weights, tokenizer, the batch generator and its prefill pacer of one resident model.

    The generator is created and driven only by the engine thread; `leases`,
    `last_used` and `fresh_until` are guarded by the engine's lock.
    """

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, config: dict[str, Any]) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.context_length = spec.context_length or int(
            config.get("max_position_embeddings") or 4096
        )
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self.has_tool_calling = bool(getattr(tokenizer, "has_tool_calling", False))
        self.has_thinking = bool(getattr(tokenizer, "has_thinking", False))
        # For the size checks made before tokenizing (inference.local.prompt).
        self.longest_token = longest_token(tokenizer)
        self.generator: Any = None
        self.pacer = PrefillPacer(2048)  # how it prefills; set up with the generator
        self.leases = 0
        self.last_used = time.monotonic()
        self.fresh_until = 0.0  # kept from eviction until then (just loaded)
        self._generator_options: dict[str, int] = {}

    def ensure_generator(self, *, max_batch_size: int, prefill_step_size: int) -> Any:
        if self.generator is None:
            from mlx_lm.generate import BatchGenerator

            self.pacer = PrefillPacer(prefill_step_size)
            self._generator_options = {
                "max_batch_size": max_batch_size,
                "prefill_step_size": prefill_step_size,
            }
            self.generator = BatchGenerator(
                self.model,
                stop_tokens=[[t] for t in self.eos_token_ids],
                completion_batch_size=max_batch_size,
                prefill_batch_size=min(8, max_batch_size),
                prefill_step_size=prefill_step_size,
            )
        return self.generator

    def reset_generator(self) -> None:
        if self.generator is not None:
            self.generator.close()
        self.generator = None
        if self._generator_options:
            self.ensure_generator(**self._generator_options)

    def release(self) -> None:
        """Drop the weights (engine thread): called when the model is evicted."""
        import mlx.core as mx

        if self.generator is not None:
            self.generator.close()
        self.generator = None
        self.model = None
        mx.clear_cache()

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        thinking: bool | None = None,
    ) -> list[int]:
        """Prompt token ids through the tokenizer's own chat template.

        `thinking` is passed as `enable_thinking`, the switch reasoning models'
        templates read (Qwen3 and others); templates without it ignore it.
        """
        kwargs: dict[str, Any] = {"add_generation_prompt": True}
        if messages and messages[-1].get("role") == "assistant" and messages[-1].get("content"):
            # A trailing assistant message is a prefill (Anthropic clients, or the
            # gateway continuing a broken stream): the model goes on with that text
            # instead of starting a new turn after it.
            kwargs = {"continue_final_message": True}
        if tools:
            kwargs["tools"] = tools
        if thinking is not None:
            kwargs["enable_thinking"] = thinking
        tokens = self.tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
        if isinstance(tokens, dict):  # some tokenizers return a BatchEncoding
            tokens = tokens["input_ids"]
        return list(tokens)

    def __repr__(self) -> str:
        return f"LoadedModel({self.spec.name!r})"


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load through mlx-lm's own loading code; local folders only, never a hub."""
    from mlx_lm.utils import load

    path = Path(spec.path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model at {path} (config.json missing)")
    started = time.perf_counter()
    loaded = load(str(path))  # typed as a 2- or 3-tuple (its return_config switch)
    model, tokenizer = loaded[0], loaded[1]
    config = json.loads((path / "config.json").read_text())
    logger.info("loaded %s in %.2fs", spec.name, time.perf_counter() - started)
    return LoadedModel(spec, model, tokenizer, config)
