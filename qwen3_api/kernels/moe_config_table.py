"""The fused MoE's block sizes: a JSON table per (E, N, dtype, GPU name) with batch-size buckets.

The tables live in ``moe_configs/`` (written by ``benchmarks/tune_moe.py`` on the GPU they are for). Without a
matching table vLLM's default is used and a warning is logged once, because untuned configs cost 20-50 % of
decode speed.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "moe_configs"
MoEConfig = dict[str, int]


@functools.cache
def _device_name() -> str:
    return torch.cuda.get_device_name().replace(" ", "_") if torch.cuda.is_available() else "cpu"


def _dtype_name(dtype: torch.dtype) -> str:
    names = {
        torch.bfloat16: "bf16",
        torch.float16: "fp16",
        torch.float32: "fp32",
        torch.float8_e4m3fn: "fp8_w8a8",
    }  # fp8: the block-FP8 experts of triton_fp8_moe.py
    return names.get(dtype, str(dtype))


def config_file_name(num_experts: int, n: int, dtype: torch.dtype, device_name: str) -> str:
    """The table's file name for one (E, N = intermediate size, dtype, GPU) combination."""
    return f"E={num_experts},N={n},dtype={_dtype_name(dtype)},device_name={device_name}.json"


@functools.cache
def load_config_table(
    num_experts: int, n: int, dtype: torch.dtype, device_name: str, config_dir: Path = CONFIG_DIR
) -> dict[int, MoEConfig] | None:
    """The tuned table {batch bucket: config} for this shape and GPU, or None (warned about once)."""
    path = Path(config_dir) / config_file_name(num_experts, n, dtype, device_name)
    if not path.is_file():
        logger.warning(
            "Using default MoE config: no tuned table %s (expect slower decode; run "
            "`python benchmarks/tune_moe.py` on this GPU to make one).",
            path.name,
        )
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return {int(k): v for k, v in data["configs"].items()}


def default_config(m: int, num_experts: int) -> MoEConfig:
    """vLLM's fallback: small tiles when few tokens per expert, larger ones otherwise."""
    if m <= num_experts:
        return {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}
    return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}


def get_moe_config(
    m: int,
    num_experts: int,
    n: int,
    dtype: torch.dtype,
    device_name: str | None = None,
    config_dir: Path = CONFIG_DIR,
) -> MoEConfig:
    """Block sizes for a batch of m tokens: the tuned entry of the nearest batch bucket, else the default."""
    table = load_config_table(num_experts, n, dtype, device_name or _device_name(), Path(config_dir))
    if not table:
        return default_config(m, num_experts)
    return table[min(table, key=lambda bucket: abs(bucket - m))]
