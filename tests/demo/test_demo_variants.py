"""The 2507 checkpoints: a 262,144-token native window (no YaRN) and the templates of that generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.demo.variants import VARIANTS
from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.engine.llm_engine import default_max_model_len
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.loader import load_model
from tests.model.helpers import TINY_MOE, hf_model, make_contiguous_metadata, random_seqs

# Qwen's own template (../shared) with the two edits the 2507 templates published on the Hub make: the
# generation prompt (no switch / an opened thought) and, for Instruct, a history thought only when there is one.
_OFFICIAL_PROMPT = ("{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking "
                    "is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n    "
                    "{%- endif %}\n{%- endif %}")
_OFFICIAL_HISTORY = "{%- if loop.last or (not loop.last and reasoning_content) %}"
_EDITS = {
    "2507-instruct": [(_OFFICIAL_PROMPT, "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
                                         "{%- endif %}"), (_OFFICIAL_HISTORY, "{%- if reasoning_content %}")],
    "2507-thinking": [(_OFFICIAL_PROMPT, "{%- if add_generation_prompt %}\n    "
                                         "{{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}")],
}


def _official_2507(qwen3_tokenizer_dir: Path, variant: str) -> str:
    source = json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text())["chat_template"]
    for old, new in _EDITS[variant]:
        assert source.count(old) == 1
        source = source.replace(old, new)
    return source


@pytest.fixture(scope="module")
def hf_tokenizer(qwen3_tokenizer_dir: Path):  # noqa: ANN201 - transformers' tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)


@pytest.mark.parametrize("variant", ["2507-instruct", "2507-thinking"])
def test_tiny_2507_checkpoint(variant: str, tmp_path: Path, qwen3_tokenizer_dir: Path) -> None:
    out = make_tiny_model(tmp_path, variant=variant, tokenizer_dir=qwen3_tokenizer_dir, dtype="float32")
    raw = json.loads((out / "config.json").read_text())
    assert raw["max_position_embeddings"] == 262144 and raw["rope_theta"] == 1e7 and raw["rope_scaling"] is None
    config = ModelConfig.from_pretrained(out)
    assert config.native_context_len == 262144 and default_max_model_len(config) == 262144
    assert config.with_max_model_len(262144) is config  # no YaRN anywhere up to the native window
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["top_p"] == VARIANTS[variant].generation["top_p"] and gen["eos_token_id"] == [151645, 151643]
    template = ChatTemplate(ChatTokenizer.from_dir(out))
    assert template.thinking_mode == {"2507-instruct": "never", "2507-thinking": "always"}[variant]


def test_original_keeps_32k_native_and_yarn_opt_in(tmp_path: Path, qwen3_tokenizer_dir: Path) -> None:
    out = make_tiny_model(tmp_path, tokenizer_dir=qwen3_tokenizer_dir)
    config = ModelConfig.from_pretrained(out)
    assert config.max_position_embeddings == 40960 and config.native_context_len == 32768
    assert default_max_model_len(config) == 32768
    assert config.with_max_model_len(131072).rope_scaling["factor"] == 4.0
    assert ChatTemplate(ChatTokenizer.from_dir(out)).thinking_mode == "switch"
    other = ModelConfig.from_dict({**json.loads((out / "config.json").read_text()), "max_position_embeddings": 65536})
    assert other.native_context_len == 65536  # a checkpoint's own window is taken at its word


CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hi!"}],
    "history": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"},
    ],
    "tool_loop": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "cold"},
        {"role": "assistant", "content": "Checking more.", "reasoning_content": "one more", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Bergen\"}"}}]},
        {"role": "tool", "content": "wet"},
    ],
    "answered": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
}  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("variant", ["2507-instruct", "2507-thinking"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("thinking", [None, True, False])
def test_variant_templates_render_as_the_2507_checkpoints(variant, name, thinking, hf_tokenizer,
                                                          qwen3_tokenizer_dir) -> None:
    kwargs = {"tools": TOOLS if name == "tool_loop" else None, "tokenize": False,
              "add_generation_prompt": name != "answered"}
    if thinking is not None:
        kwargs["enable_thinking"] = thinking  # a no-op for both 2507 templates
    messages = CONVERSATIONS[name]
    real = hf_tokenizer.apply_chat_template(messages, chat_template=_official_2507(qwen3_tokenizer_dir, variant),
                                            **kwargs)
    ours = hf_tokenizer.apply_chat_template(messages, chat_template=VARIANTS[variant].chat_template(), **kwargs)
    assert ours == real
    if kwargs["add_generation_prompt"]:
        tail = "<|im_start|>assistant\n" + ("<think>\n" if variant == "2507-thinking" else "")
        assert ours.endswith(tail)


def _prefill_at(net, seq: list[int], start: int) -> torch.Tensor:
    """Our logits for one sequence placed at positions start, start+1, ... (past the old 32K window)."""
    attn = make_contiguous_metadata([len(seq)], "cpu", 8)
    caches = allocate_kv_cache(net.config, -(-len(seq) // 8), 8, "cpu", net.dtype)
    positions = torch.arange(start, start + len(seq))
    return net.compute_logits(net(torch.tensor(seq), positions, attn, caches))


def test_2507_config_equals_transformers_past_32k(tmp_path: Path) -> None:
    """Served at its full native window, a 2507-shaped model computes what transformers computes (no YaRN)."""
    overrides = TINY_MOE | {"rope_theta": 10_000_000.0, "max_position_embeddings": 262144}
    ref = hf_model(overrides)
    ref.save_pretrained(tmp_path)
    net, config = load_model(tmp_path, dtype=torch.float32, progress=False, max_model_len=262144)
    assert config.rope_scaling is None and config.native_context_len == 262144
    seq = random_seqs([23], overrides["vocab_size"], seed=3)[0]
    for start in (40000, 200000):
        with torch.no_grad():
            theirs = ref(torch.tensor([seq]), position_ids=torch.arange(start, start + len(seq))[None]).logits[0]
        ours = _prefill_at(net, seq, start)
        assert theirs.std() > 0.3
        assert (ours - theirs).abs().max().item() <= 1e-4
    # The old rule (YaRN x8 above a 32,768 window) computes a different function at those positions.
    old_rule = tmp_path / "yarn"
    shutil.copytree(tmp_path, old_rule, ignore=shutil.ignore_patterns("yarn"))
    raw = json.loads((old_rule / "config.json").read_text())
    yarn = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32768}
    raw["rope_parameters"] = {**raw.get("rope_parameters", {}), **yarn}  # transformers 5 writes this spelling
    raw["rope_scaling"] = yarn
    (old_rule / "config.json").write_text(json.dumps(raw))
    net_yarn, yarn_config = load_model(old_rule, dtype=torch.float32, progress=False)
    assert yarn_config.rope_scaling is not None and yarn_config.rope_scaling["factor"] == 8.0
    assert (_prefill_at(net_yarn, seq, 40000) - _prefill_at(net, seq, 40000)).abs().max().item() > 1e-2


def test_make_tiny_model_cli_variant(tmp_path: Path) -> None:
    from qwen3_api.cli import main

    assert main(["make-tiny-model", str(tmp_path / "m"), "--variant", "2507-thinking", "--layers", "1"]) == 0
    config = ModelConfig.from_pretrained(tmp_path / "m")
    assert config.native_context_len == 262144 and config.rope_theta == 1e7
    assert ChatTemplate(ChatTokenizer.from_dir(tmp_path / "m")).thinking_mode == "always"  # demo tokenizer too
