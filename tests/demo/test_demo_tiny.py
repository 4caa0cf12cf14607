"""make-tiny-model and the demo model: real HF format, the demo tokenizer and its Qwen3 chat template."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from qwen3_api.demo import tiny
from qwen3_api.demo.tokenizer import ADDED_TOKENS, SPECIAL_TOKENS, demo_chat_template
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.loader import load_model
from tests.model.helpers import our_prefill_logits, random_seqs


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return tiny.make_tiny_model(tmp_path_factory.mktemp("demo"), dtype="float32", seed=7)


def test_files_config_and_ids_come_from_the_tokenizer(demo_dir: Path) -> None:
    names = {p.name for p in demo_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names  # fmt: skip
    raw = json.loads((demo_dir / "config.json").read_text())
    # the real checkpoint's spellings, so old readers (and ours) see the same keys as Qwen3-30B-A3B
    assert {"rope_theta", "num_experts", "torch_dtype"} <= raw.keys() and "rope_parameters" not in raw
    tok = Tokenizer.from_file(str(demo_dir / "tokenizer.json"))
    assert 1000 <= tok.get_vocab_size() <= 2000
    assert raw["vocab_size"] >= tok.get_vocab_size()
    gen = json.loads((demo_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    assert ModelConfig.from_pretrained(demo_dir).eos_token_ids == gen["eos_token_id"]


def test_demo_tokenizer_tokens_and_round_trip(demo_dir: Path) -> None:
    tok = Tokenizer.from_file(str(demo_dir / "tokenizer.json"))
    added = {t.content: t for t in tok.get_added_tokens_decoder().values()}
    assert all(added[t].special for t in SPECIAL_TOKENS)
    assert not any(added[t].special for t in ADDED_TOKENS)  # like Qwen3: kept by skip_special_tokens
    text = "<|im_start|>user\nHi 你好 😀 {\"a\": [1, 2.5]}<|im_end|>\n<think>\nhm\n</think>\n\n<tool_call>x</tool_call>"
    enc = tok.encode(text)
    assert tok.decode(enc.ids, skip_special_tokens=False) == text
    for t in SPECIAL_TOKENS + ADDED_TOKENS:
        assert tok.token_to_id(t) in enc.ids or t == "<|endoftext|>" or "response" in t
    assert "<think>" in tok.decode(enc.ids, skip_special_tokens=True)
    assert "<|im_start|>" not in tok.decode(enc.ids, skip_special_tokens=True)


def test_deterministic_per_seed(tmp_path) -> None:
    a = tiny.make_tiny_model(tmp_path / "a", layers=1, seed=3)
    b = tiny.make_tiny_model(tmp_path / "b", layers=1, seed=3)
    c = tiny.make_tiny_model(tmp_path / "c", layers=1, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"):
        assert (a / name).read_text() == (b / name).read_text()


def test_transformers_loads_it_and_computes_the_same_logits(demo_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(demo_dir, dtype=torch.float32).eval()
    assert type(ref).__name__ == "Qwen3MoeForCausalLM"
    net, config = load_model(demo_dir, progress=False)
    seqs = random_seqs([6, 11], config.vocab_size, seed=2)
    with torch.no_grad():
        theirs = [ref(torch.tensor([s])).logits[0] for s in seqs]
    for o, t in zip(our_prefill_logits(net, seqs), theirs, strict=True):
        assert (o - t).abs().max().item() <= 1e-4


def test_cli_with_the_real_tokenizer(tmp_path, qwen3_tokenizer_dir: Path) -> None:
    from qwen3_api.cli import main

    out = tmp_path / "real-tok"
    assert main(["make-tiny-model", str(out), "--dense", "--layers", "1", "--hidden", "32",
                 "--heads", "2", "--kv-heads", "1", "--tokenizer", str(qwen3_tokenizer_dir)]) == 0  # fmt: skip
    raw = json.loads((out / "config.json").read_text())
    assert raw["architectures"] == ["Qwen3ForCausalLM"] and raw["vocab_size"] == 151936
    assert (out / "tokenizer.json").read_bytes() == (qwen3_tokenizer_dir / "tokenizer.json").read_bytes()
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643]
    net, config = load_model(out, progress=False)
    assert config.hidden_size == 32 and net.dtype == torch.bfloat16


def test_ensure_demo_model_builds_once(tmp_path) -> None:
    first = tiny.ensure_demo_model(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = tiny.ensure_demo_model(tmp_path)
    assert again == first == tmp_path / "demo-model"
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-model-")]
    config = ModelConfig.from_pretrained(first)
    assert config.is_moe and config.num_experts == 8 and config.num_experts_per_tok == 2
    assert json.loads((first / "tokenizer_config.json").read_text())["chat_template"] == demo_chat_template()


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}},
]  # fmt: skip
CONVERSATIONS = {
    "system_user": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
    "user_only": [{"role": "user", "content": "你好 😀"}],
    "multi_turn_with_history_thinking": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "again"},
        {"role": "user", "content": "thanks"},
    ],
    "tools_round_trip": [
        {"role": "system", "content": "You use tools."},
        {"role": "user", "content": "Weather in Paris and 1+2?"},
        {"role": "assistant", "content": "<think>\nneed tools\n</think>\n\nLet me check.", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}},
        ]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "tool", "content": "3"},
        {"role": "assistant", "content": "", "reasoning_content": "summarise", "tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": {"a": 3, "b": 4}}}]},
        {"role": "tool", "content": "7"},
    ],
    "tool_calls_without_content": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "cold"},
        {"role": "assistant", "content": "It is cold."},
        {"role": "user", "content": "<tool_response>\nraw\n</tool_response>"},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def real_hf_tokenizer(qwen3_tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [False, True])
@pytest.mark.parametrize("thinking", [None, True, False])
def test_demo_chat_template_renders_the_qwen3_format(
    name: str, with_tools: bool, thinking: bool | None, real_hf_tokenizer
) -> None:
    """Our own template renders exactly what the real Qwen3 template renders (rendered by transformers)."""
    tok = real_hf_tokenizer
    kwargs = {"tools": TOOLS if with_tools else None, "tokenize": False, "add_generation_prompt": True}
    if thinking is not None:
        kwargs["enable_thinking"] = thinking
    messages = CONVERSATIONS[name]
    real = tok.apply_chat_template(messages, **kwargs)
    ours = tok.apply_chat_template(messages, chat_template=demo_chat_template(), **kwargs)
    assert ours == real
    assert ours.endswith("<|im_start|>assistant\n" + ("<think>\n\n</think>\n\n" if thinking is False else ""))


def test_demo_tokenizer_config_carries_the_template(demo_dir: Path) -> None:
    from transformers import AutoTokenizer

    config = json.loads((demo_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == demo_chat_template()
    assert config["eos_token"] == "<|im_end|>"
    tok = AutoTokenizer.from_pretrained(demo_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    fast = Tokenizer.from_file(str(demo_dir / "tokenizer.json"))
    assert tok(text)["input_ids"] == fast.encode(text).ids
