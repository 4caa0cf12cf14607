"""Engine options: the CLI flags and the KV-cache budget."""

from __future__ import annotations

import argparse

import pytest
import torch

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.kv_cache import free_memory_bytes, kv_block_bytes, kv_cache_budget_bytes, num_kv_blocks


def parse(*argv: str) -> EngineArgs:
    return EngineArgs.from_cli_args(EngineArgs.add_cli_args(argparse.ArgumentParser()).parse_args(argv))


def test_cli_defaults_and_flags():
    assert parse() == EngineArgs()
    args = parse("--model", "m", "--dtype", "bfloat16", "--max-model-len", "65536", "--kv-cache-memory", "12",
                 "--block-size", "32", "--max-num-seqs", "8", "--max-num-batched-tokens", "512",
                 "--no-enable-prefix-caching", "--no-enable-chunked-prefill", "--seed", "3", "--device", "cpu")
    assert args == EngineArgs(model="m", dtype="bfloat16", device="cpu", max_model_len=65536, kv_cache_memory=12.0,
                              block_size=32, max_num_seqs=8, max_num_batched_tokens=512,
                              enable_prefix_caching=False, enable_chunked_prefill=False, seed=3)
    assert args.resolve_dtype(torch.bfloat16, torch.device("cpu")) == torch.bfloat16
    assert EngineArgs().resolve_dtype(torch.bfloat16, torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("kwargs, name", [({"dtype": "int8"}, "dtype"), ({"kv_cache_memory": 0}, "kv_cache_memory"),
                                          ({"block_size": 0}, "block_size"), ({"max_model_len": 1}, "max_model_len")])
def test_bad_options_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EngineArgs(**kwargs)


def test_kv_budget_in_gib_or_a_fraction_of_free_memory(tiny_moe):
    cpu = torch.device("cpu")
    assert kv_cache_budget_bytes(2.0, cpu) == 2 * 2**30
    free = free_memory_bytes(cpu)
    assert free > 0
    assert abs(kv_cache_budget_bytes(0.5, cpu) - free // 2) < free // 20  # MemAvailable moves a little
    _, config = tiny_moe
    per_block = kv_block_bytes(config, 16, torch.float32)
    assert per_block == 2 * config.num_hidden_layers * 16 * config.num_key_value_heads * config.head_dim * 4
    assert num_kv_blocks(config, 16, torch.float32, 1.5, cpu) == int(1.5 * 2**30) // per_block
    with pytest.raises(ValueError, match="kv-cache-memory"):
        num_kv_blocks(config, 16, torch.float32, 1e-12, cpu)


def test_start_up_logs_blocks_and_yarn(tiny_moe_dir, caplog):
    from qwen3_api.engine.llm_engine import LLMEngine

    caplog.set_level("INFO", logger="qwen3_api.engine")
    engine = LLMEngine.from_engine_args(EngineArgs(model=str(tiny_moe_dir), device="cpu", kv_cache_memory=1.01,
                                                   max_model_len=65536))
    n = engine.block_manager.num_blocks
    assert n == int(1.01 * 2**30) // kv_block_bytes(engine.model_config, 16, torch.float32)
    assert f"KV cache: {n} blocks of 16 tokens" in caplog.text
    assert "YaRN" in caplog.text
    assert engine.model_config.rope_scaling["factor"] == pytest.approx(2.0)
    assert engine.max_model_len == 65536
    assert engine.vocab_size == 151_669  # from the checkpoint's tokenizer.json


def test_default_kv_budget_on_cpu_is_bounded_and_never_exceeds_what_can_be_used(tiny_moe):
    cpu = torch.device("cpu")
    default = kv_cache_budget_bytes(None, cpu)
    assert 0 < default <= 4 * 2**30
    assert default <= free_memory_bytes(cpu) // 2 + 2**26
    _, config = tiny_moe
    capped = num_kv_blocks(config, 16, torch.float32, None, cpu, max_useful_blocks=300)
    assert capped == 300  # 4 GiB of a tiny model's blocks would be far more than 300
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineArgs(gpu_memory_utilization=1.5)
    assert parse("--gpu-memory-utilization", "0.8").gpu_memory_utilization == 0.8


def test_default_context_is_the_native_one_without_yarn(tiny_moe):
    import dataclasses

    from qwen3_api.engine.llm_engine import default_max_model_len

    _, config = tiny_moe
    real_like = dataclasses.replace(config, max_position_embeddings=40960, rope_scaling=None)
    assert default_max_model_len(real_like) == 32768  # Qwen3-30B-A3B's config says 40,960; native is 32,768
    yarn = real_like.with_max_model_len(131072)
    assert default_max_model_len(yarn) == 131072  # a checkpoint that ships static YaRN serves all of it
    small = dataclasses.replace(config, max_position_embeddings=4096, rope_scaling=None)
    assert default_max_model_len(small) == 4096
