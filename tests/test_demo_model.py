"""Tests for the offline tiny demo model builder (no Django needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.demo_model import SPECIAL_TOKENS, TOKEN_IDS, build_demo_model

mlx_lm = pytest.importorskip("mlx_lm")
from mlx_lm.sample_utils import make_sampler  # noqa: E402
from mlx_lm.tool_parsers import json_tools  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def loaded(model_dir: Path):
    return mlx_lm.load(str(model_dir))


def test_writes_expected_files(model_dir: Path) -> None:
    assert set(_files(model_dir)) == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == 256
    assert config["num_hidden_layers"] == 4
    assert config["vocab_size"] == 2048
    assert config["eos_token_id"] == TOKEN_IDS["<|im_end|>"]
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["bos_token"] is None
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_same_seed_is_byte_identical(tmp_path: Path, model_dir: Path) -> None:
    again = build_demo_model(tmp_path / "again")
    assert _files(again) == _files(model_dir)


def test_other_seed_changes_only_weights(tmp_path: Path, model_dir: Path) -> None:
    other = _files(build_demo_model(tmp_path / "other", seed=1))
    base = _files(model_dir)
    assert other["model.safetensors"] != base["model.safetensors"]
    assert {k: v for k, v in other.items() if k != "model.safetensors"} == {
        k: v for k, v in base.items() if k != "model.safetensors"
    }


def test_progress_reports_each_stage(tmp_path: Path) -> None:
    lines: list[str] = []
    result = build_demo_model(tmp_path / "m", hidden_size=64, num_layers=1, progress=lines.append)
    assert result == tmp_path / "m"
    for stage in ("corpus", "tokenizer", "weights", "writing"):
        assert any(line.startswith(stage) for line in lines), (stage, lines)


@pytest.mark.parametrize(
    "kwargs",
    [{"hidden_size": 100}, {"num_layers": 0}, {"vocab_size": 100}, {"seed": -1}],
)
def test_rejects_bad_sizes(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        build_demo_model(tmp_path, **kwargs)


def test_special_tokens_are_single_tokens(loaded) -> None:
    _, tok = loaded
    for content, _special in SPECIAL_TOKENS:
        assert tok.encode(content, add_special_tokens=False) == [TOKEN_IDS[content]]
        assert tok.convert_tokens_to_ids(content) == TOKEN_IDS[content]
    # Tool markers are not "special", so a plain decode keeps them.
    ids = tok.encode("<tool_call>{}</tool_call><|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<tool_call>{}</tool_call>"


def test_eos_and_tool_calling_are_inferred(loaded) -> None:
    _, tok = loaded
    assert TOKEN_IDS["<|im_end|>"] in tok.eos_token_ids
    assert tok.eos_token == "<|im_end|>"
    assert tok.has_chat_template
    assert tok.has_tool_calling
    assert tok.tool_parser is json_tools.parse_tool_call
    assert tok.tool_call_start_tokens == (TOKEN_IDS["<tool_call>"],)
    assert tok.tool_call_end_tokens == (TOKEN_IDS["</tool_call>"],)


def test_chat_template_renders_tools_and_turns(loaded) -> None:
    _, tok = loaded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 3}'},
        {"role": "assistant", "content": "It is 3 degrees."},
        {"role": "user", "content": "Thanks"},
    ]
    text = tok.apply_chat_template(
        messages, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in text
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert "<|im_start|>assistant\n" + call + "<|im_end|>" in text
    assert '<tool_response>\n{"temp_c": 3}\n</tool_response>' in text
    assert text.endswith("<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n")
    assert tok.tool_parser(call.split("\n", 1)[1].rsplit("\n", 1)[0]) == {
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
    }

    ids = tok.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True)
    assert ids[0] == TOKEN_IDS["<|im_start|>"]
    # Two in the system instructions ("<tool_call></tool_call> XML tags" and the
    # example), one for the actual call: each a single token.
    assert ids.count(TOKEN_IDS["<tool_call>"]) == 3
    assert tok.decode(ids) == text


def test_chat_template_without_tools_or_thinking(loaded) -> None:
    _, tok = loaded
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert (
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    no_think = tok.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_generates_tokens_greedily(loaded) -> None:
    model, tok = loaded
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True
    )
    sampler = make_sampler(temp=0.0)
    first = mlx_lm.generate(model, tok, prompt, max_tokens=8, sampler=sampler)
    assert first
    assert mlx_lm.generate(model, tok, prompt, max_tokens=8, sampler=sampler) == first

    responses = list(mlx_lm.stream_generate(model, tok, prompt, max_tokens=8, sampler=sampler))
    assert 1 <= len(responses) <= 8
    assert all(0 <= r.token < 2048 for r in responses)
    assert "".join(r.text for r in responses) == first


def test_large_vocab_is_padded_with_reserved_tokens(tmp_path: Path) -> None:
    folder = build_demo_model(tmp_path / "big", hidden_size=64, num_layers=1, vocab_size=4096)
    model, tok = mlx_lm.load(str(folder))
    assert len(tok) == 4096
    assert tok.decode([4095]) == "<|reserved_4095|>"
    out = mlx_lm.generate(model, tok, "The", max_tokens=4, sampler=make_sampler(temp=0.0))
    assert "<|reserved_" not in out
