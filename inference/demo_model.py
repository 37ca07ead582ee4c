"""Build a tiny, randomly initialised Llama model folder for tests and demos.

Nothing is downloaded: the tokenizer is trained on ``demo_corpus.txt`` that ships
next to this file, and the weights come from a seeded generator, so a given seed
always produces byte-identical files. The output loads with ``mlx_lm.load`` and
behaves like a ChatML (Qwen2.5-style) chat model with tool calling; what it
generates is noise, which is all the gateway's plumbing needs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CORPUS_PATH = Path(__file__).with_name("demo_corpus.txt")

# (content, special). Fixed at the front of the vocabulary so their ids never
# depend on the corpus or the vocabulary size. The tool and think markers are
# not "special", as in Qwen, so decode(skip_special_tokens=True) keeps them and
# tool-call parsing still sees them.
SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<think>", False),
    ("</think>", False),
)
TOKEN_IDS: dict[str, int] = {content: i for i, (content, _) in enumerate(SPECIAL_TOKENS)}
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
CHATML_MARKERS = ["<|im_start|>", "<|im_end|>"]
MAX_POSITION_EMBEDDINGS = 4096
_BYTE_ALPHABET = 256

# mlx-lm picks its "json_tools" parser because the template contains both
# "<tool_call>" and "tool_call.name"; keep both literals if this is edited.
CHAT_TEMPLATE = """\
{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is mapping -%}{{ content | tojson }}
{%- elif content -%}
{%- for part in content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if has_system -%}{{- render(messages[0].content) + '\\n\\n' -}}{%- endif -%}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and '
    'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
    '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- elif has_system -%}
{{- '<|im_start|>system\\n' + render(messages[0].content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if loop.first and has_system -%}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}
{{- '<|im_start|>user' -}}
{%- endif -%}
{{- '\\n<tool_response>\\n' + render(message.content) + '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant' -}}
{%- if message.content -%}{{- '\\n' + render(message.content) -}}{%- endif -%}
{%- for tool_call in message.tool_calls or [] -%}
{%- if tool_call.function is defined -%}{%- set tool_call = tool_call.function -%}{%- endif -%}
{{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' -}}
{%- if tool_call.arguments is string -%}{{- tool_call.arguments -}}
{%- else -%}{{- tool_call.arguments | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{- '<think>\\n\\n</think>\\n\\n' -}}
{%- endif -%}
{%- endif -%}
"""


def build_demo_model(
    target: Path,
    *,
    seed: int = 0,
    hidden_size: int = 256,
    num_layers: int = 4,
    vocab_size: int = 2048,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a loadable tiny Llama model (config, weights, tokenizer) into ``target``.

    Existing files of the same names are overwritten. The corpus yields about
    2,100 tokens; ids past that are reserved placeholders that greedy decoding
    never picks but temperature sampling can.
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if hidden_size <= 0 or hidden_size % 64:
        raise ValueError("hidden_size must be a positive multiple of 64")
    if num_layers <= 0:
        raise ValueError("num_layers must be positive")
    # Byte-level BPE always keeps the full byte alphabet, so a smaller vocabulary
    # would hand the model token ids beyond its embedding table.
    if vocab_size < _BYTE_ALPHABET + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {_BYTE_ALPHABET + len(SPECIAL_TOKENS)}")

    def report(line: str) -> None:
        if progress is not None:
            progress(line)

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)

    text = CORPUS_PATH.read_text(encoding="utf-8")
    report(f"corpus: {len(text.encode('utf-8')):,} bytes from {CORPUS_PATH.name}")

    tokenizer_json, learned = _train_tokenizer(text, vocab_size)
    report(
        f"tokenizer: trained byte-level BPE, {learned} learned ids"
        f" + {vocab_size - learned} reserved = {vocab_size}"
    )

    config = _model_config(hidden_size, num_layers, vocab_size)
    weights = _random_weights(config, seed, learned)
    n_params = sum(w.size for w in weights.values())
    report(f"weights: {len(weights)} tensors, {n_params / 1e6:.2f}M parameters (seed {seed})")

    import mlx.core as mx

    report(f"writing: model.safetensors, config.json and tokenizer files to {target}")
    mx.save_safetensors(str(target / "model.safetensors"), weights, metadata={"format": "mlx"})
    (target / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    _write_json(target / "config.json", config)
    _write_json(
        target / "generation_config.json",
        {
            "bos_token_id": None,
            # Also <|endoftext|>, as Qwen does, for completions that end a document.
            "eos_token_id": [TOKEN_IDS[EOS_TOKEN], TOKEN_IDS[PAD_TOKEN]],
            "pad_token_id": TOKEN_IDS[PAD_TOKEN],
        },
    )
    _write_json(target / "tokenizer_config.json", _tokenizer_config())
    _write_json(
        target / "special_tokens_map.json",
        {
            "additional_special_tokens": CHATML_MARKERS,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
        },
    )
    report("done")
    return target


def _train_tokenizer(text: str, vocab_size: int) -> tuple[str, int]:
    """Return tokenizer.json text and how many ids hold learned (non-reserved) tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t, _ in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Blank-line separated documents keep merges from spanning unrelated texts.
    documents = [d for d in text.split("\n\n") if d.strip()]
    tokenizer.train_from_iterator(documents, trainer)

    # The trainer marks every token it is given as special and has no option
    # against it, so demote the tool and think markers afterwards.
    data: dict[str, Any] = json.loads(tokenizer.to_str())
    special = dict(SPECIAL_TOKENS)
    for added in data["added_tokens"]:
        added["special"] = special[added["content"]]
    vocab: dict[str, int] = data["model"]["vocab"]
    learned = len(vocab)
    if learned > vocab_size:
        raise RuntimeError("trained tokenizer is larger than the model vocabulary")
    # A small corpus runs out of merges before a large vocab_size is reached.
    # Fill the rest with reserved special tokens (as Llama 3 does) so that every
    # id the model can emit decodes to something instead of vanishing.
    for token_id in range(learned, vocab_size):
        content = f"<|reserved_{token_id}|>"
        vocab[content] = token_id
        data["added_tokens"].append({"id": token_id, **_added_token(content, special=True)})
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n", learned


def _model_config(hidden_size: int, num_layers: int, vocab_size: int) -> dict[str, Any]:
    num_heads = hidden_size // 64
    # Grouped-query attention where possible, so KV-cache code paths that assume
    # fewer KV heads than query heads get exercised.
    num_kv_heads = num_heads // 2 if num_heads % 2 == 0 else num_heads
    # The usual SwiGLU sizing (8/3 of hidden), rounded up to a friendly multiple.
    intermediate_size = -(-hidden_size * 8 // 3 // 64) * 64
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": hidden_size // num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "vocab_size": vocab_size,
        "bos_token_id": None,
        "eos_token_id": TOKEN_IDS[EOS_TOKEN],
        "pad_token_id": TOKEN_IDS[PAD_TOKEN],
        "torch_dtype": "float32",
    }


def _random_weights(config: dict[str, Any], seed: int, learned: int) -> dict[str, Any]:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    # Take names and shapes from mlx-lm's own Llama so they cannot drift from
    # what mlx_lm.load expects.
    model = llama.Model(llama.ModelArgs.from_dict(config))
    parameters: dict[str, Any] = {}
    tree_flatten(model.parameters(), destination=parameters)
    shapes = {name: tuple(p.shape) for name, p in parameters.items()}

    hidden = config["hidden_size"]
    residual_scale = (2 * config["num_hidden_layers"]) ** -0.5
    weights: dict[str, Any] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            weights[name] = mx.ones(shape, dtype=mx.float32)
            continue
        # A stream per tensor, keyed by a stable hash of its name (not hash(),
        # which is salted per process), so adding a tensor never shifts others.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        # Unit-variance activations everywhere; with the tied embedding this
        # gives logits of roughly unit spread: neither flat nor one-hot.
        std = hidden**-0.5 if "embed_tokens" in name else shape[-1] ** -0.5
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            std *= residual_scale
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        if "embed_tokens" in name:
            # Zero logit for reserved ids: greedy decoding never picks them, as a
            # trained model would not.
            values[learned:] = 0.0
        weights[name] = mx.array(values)

    # Fails loudly if a name or shape is wrong, rather than at load time.
    model.load_weights(list(weights.items()), strict=True)
    return weights


def _tokenizer_config() -> dict[str, Any]:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        # Listed so that all_special_tokens covers the ChatML markers, as in Qwen.
        "additional_special_tokens": CHATML_MARKERS,
        "added_tokens_decoder": {
            str(i): _added_token(content, special=special)
            for i, (content, special) in enumerate(SPECIAL_TOKENS)
        },
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def _added_token(content: str, *, special: bool) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
