"""Issue 16 through the engine on the CPU: `--kv-cache-dtype fp8` (FP8 storage, twice the tokens of bf16 in the
same bytes) and an official-format FP8 checkpoint served by the offline LLM (dequantized at load)."""

from __future__ import annotations

import argparse

import pytest
import torch

from qwen3_api.demo.tiny_fp8 import make_tiny_fp8_model
from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.kv_cache import num_kv_blocks
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.llm import LLM
from qwen3_api.model.config import ModelConfig


def test_kv_cache_dtype_flag():
    parser = EngineArgs.add_cli_args(argparse.ArgumentParser())
    args = EngineArgs.from_cli_args(parser.parse_args(["--kv-cache-dtype", "fp8"]))
    assert args.kv_cache_dtype == "fp8"
    assert args.resolve_kv_cache_dtype(torch.bfloat16) == torch.float8_e4m3fn
    assert EngineArgs().resolve_kv_cache_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        EngineArgs(kv_cache_dtype="int4")


def test_an_fp8_cache_holds_twice_the_blocks_of_bf16_in_the_same_budget(tiny_moe):
    _, config = tiny_moe
    cpu = torch.device("cpu")
    bf16 = num_kv_blocks(config, 16, torch.bfloat16, 0.25, cpu)
    assert num_kv_blocks(config, 16, torch.float8_e4m3fn, 0.25, cpu) in (2 * bf16, 2 * bf16 + 1)


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory, qwen3_tokenizer_dir):
    return make_tiny_fp8_model(tmp_path_factory.mktemp("fp8"), tokenizer_dir=qwen3_tokenizer_dir, layers=2)


def first_steps(llm: LLM, prompts: list[list[int]]) -> list[tuple[list[int], float]]:
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, logprobs=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs[0][o.outputs[0].token_ids[0]]) for o in outs]


def test_an_fp8_checkpoint_with_an_fp8_cache_generates_like_the_plain_cache(fp8_checkpoint):
    assert ModelConfig.from_pretrained(fp8_checkpoint).quantization_config["quant_method"] == "fp8"
    prompts = [list(range(100, 160)), [9, 8, 7]]
    plain = LLM(fp8_checkpoint, kv_cache_memory=0.02)
    fp8_kv = LLM(fp8_checkpoint, kv_cache_memory=0.02, kv_cache_dtype="fp8")
    assert fp8_kv.engine.runner.kv_caches[0][0].dtype == torch.float8_e4m3fn
    assert plain.engine.runner.kv_caches[0][0].dtype == torch.float32
    expected, got = first_steps(plain, prompts), first_steps(fp8_kv, prompts)
    for (tokens, logprob), (tokens8, logprob8) in zip(expected, got, strict=True):
        assert len(tokens8) == 4
        # the first token comes from a prefill that already read the FP8 cache: close, not equal
        assert tokens8[0] == tokens[0] and abs(logprob8 - logprob) < 0.1
