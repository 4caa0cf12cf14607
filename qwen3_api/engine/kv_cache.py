"""The paged KV cache, sized and allocated in one place.

The budget (``--kv-cache-memory``, ``--gpu-memory-utilization``; see :class:`EngineArgs`) becomes a number of
blocks (``plan_num_blocks``), never more than ``max_num_seqs`` full-length sequences could use; the engine's
ModelRunner allocates them (``allocate_kv_cache``): for each layer a (k_cache, v_cache) pair of
[num_blocks, block_size, num_kv_heads, head_dim] tensors in the model dtype, or in float8_e4m3fn with
``--kv-cache-dtype fp8`` (per-tensor scales on the attention layers; kernels/fp8_kv.py), which sizes twice the
blocks of bf16 from the same budget.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from qwen3_api.model.config import ModelConfig

logger = logging.getLogger(__name__)

CPU_DEFAULT_KV_GIB = 4.0  # vLLM's CPU default, capped at half the free memory


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: torch.cuda.mem_get_info on CUDA, MemAvailable from /proc/meminfo on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("can't tell free memory (no /proc/meminfo): give --kv-cache-memory in GiB (> 1.0)")


def kv_cache_budget_bytes(
    kv_cache_memory: float | None, device: torch.device, gpu_memory_utilization: float = 0.9
) -> int:
    """The KV cache's memory budget: GiB when > 1.0, else that fraction of the free memory. Unset: on CUDA
    what ``gpu_memory_utilization`` of the whole GPU leaves after what is already used (the weights; vLLM's
    rule), on the CPU ``CPU_DEFAULT_KV_GIB`` capped at half the free memory."""
    if kv_cache_memory is None:
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            return max(0, int(total * gpu_memory_utilization) - (total - free))
        return min(int(CPU_DEFAULT_KV_GIB * 2**30), free_memory_bytes(device) // 2)
    if kv_cache_memory > 1.0:
        return int(kv_cache_memory * 2**30)
    return int(kv_cache_memory * free_memory_bytes(device))


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one KV block takes over all layers (K and V)."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * config.head_dim * elem


def num_kv_blocks(
    config: ModelConfig,
    block_size: int,
    dtype: torch.dtype,
    kv_cache_memory: float | None,
    device: torch.device,
    *,
    gpu_memory_utilization: float = 0.9,
    max_useful_blocks: int | None = None,
) -> int:
    """How many blocks fit the KV budget, never more than ``max_useful_blocks`` (what ``max_num_seqs``
    full-length sequences could use: more would only cost memory and start-up time)."""
    budget = kv_cache_budget_bytes(kv_cache_memory, device, gpu_memory_utilization)
    num_blocks = budget // kv_block_bytes(config, block_size, dtype)
    if num_blocks < 1:
        raise ValueError(
            f"--kv-cache-memory {kv_cache_memory} gives {budget} bytes: not even one KV block "
            f"({kv_block_bytes(config, block_size, dtype)} bytes); raise it"
        )
    if max_useful_blocks is not None:
        num_blocks = min(num_blocks, max_useful_blocks)
    return int(num_blocks)


def plan_num_blocks(
    config: ModelConfig,
    *,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
    max_model_len: int,
    max_num_seqs: int,
    kv_cache_memory: float | None,
    gpu_memory_utilization: float,
    num_blocks: int | None = None,
) -> int:
    """The engine's number of KV blocks (``num_blocks`` when given: tests), logged with what it holds."""
    if num_blocks is None:
        num_blocks = num_kv_blocks(
            config, block_size, dtype, kv_cache_memory, device,
            gpu_memory_utilization=gpu_memory_utilization,
            max_useful_blocks=max_num_seqs * -(-max_model_len // block_size),
        )  # fmt: skip
    tokens = num_blocks * block_size
    gib = kv_block_bytes(config, block_size, dtype) * num_blocks / 2**30
    logger.info("KV cache: %d blocks of %d tokens = %d tokens, %.3f GiB (%s, %s)",
                num_blocks, block_size, tokens, gib, dtype, device)  # fmt: skip
    if max_model_len > tokens:
        logger.warning("the KV cache holds %d tokens, less than max_model_len %d: longer prompts are refused",
                       tokens, max_model_len)  # fmt: skip
    return num_blocks


def allocate_kv_cache(
    config: ModelConfig,
    num_blocks: int,
    block_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (k_cache, v_cache) per layer, each [num_blocks, block_size, num_kv_heads, head_dim], zeroed."""
    shape = (num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    dtype = dtype or config.torch_dtype
    return [
        (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
        for _ in range(config.num_hidden_layers)
    ]
