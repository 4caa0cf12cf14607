"""What the GPU can do at best, measured in the same run, and what a Qwen3-MoE step must read or compute.

Shared by gpu_decode.py and gpu_breakdown.py: the copy bandwidth and matmul rate of the device, and the bytes /
FLOPs floors of decode and prefill steps for a ModelConfig.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from qwen3_api.model.config import ModelConfig


class Timer:
    """Elapsed seconds of a callable: CUDA events on a GPU, the wall clock on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def copy_bandwidth(device: torch.device, timer: Timer, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write counted), best of 5."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    timer.sync()
    best = min(timer(lambda: dst.copy_(src)) for _ in range(5))
    return 2 * nbytes / best


def matmul_rate(device: torch.device, dtype: torch.dtype, timer: Timer, n: int) -> float:
    """FLOP/s of a square matmul in the model dtype, best of 5 (random data)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    timer.sync()
    best = min(timer(lambda: a @ b) for _ in range(5))
    return 2 * n**3 / best


def weight_bytes(config: ModelConfig, elem: int) -> tuple[int, int]:
    """(bytes of the weights every token reads except experts and embeddings, bytes of one expert)."""
    h, hd = config.hidden_size, config.head_dim
    attn = (
        h * (config.num_attention_heads + 2 * config.num_key_value_heads) * hd
        + config.num_attention_heads * hd * h
    )
    per_layer = attn + config.num_experts * h + 2 * h + 2 * hd  # + router, norms
    dense = config.num_hidden_layers * per_layer + config.vocab_size * h + h  # + lm_head, final norm
    return dense * elem, 3 * h * config.moe_intermediate_size * elem


def expected_unique_experts(config: ModelConfig, tokens: int) -> float:
    """Experts per layer touched by `tokens` tokens routed uniformly at random (top-k distinct)."""
    e, k = config.num_experts, config.num_experts_per_tok
    return e * (1.0 - (1.0 - k / e) ** tokens)


def kv_bytes_per_token(config: ModelConfig, elem: int) -> int:
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * elem


def bf16_bytes_of_fp8_model(config: ModelConfig) -> int:
    """What an FP8 checkpoint keeps in bf16 beyond one byte per weight: lm_head and the routers (their second
    byte; the FP8 block scales add under 0.01 %)."""
    return (
        config.vocab_size * config.hidden_size
        + config.num_hidden_layers * config.num_experts * config.hidden_size
    )


def decode_floor_s(
    config: ModelConfig,
    batch: int,
    context: int,
    elem: int,
    bandwidth: float,
    *,
    kv_elem: int | None = None,
    fp8_weights: bool = False,
) -> float:
    """Seconds a decode step must take to read what it needs once at the measured copy bandwidth (``elem``:
    bytes per weight, 1 with ``fp8_weights``; ``kv_elem``: bytes per cached value, default ``elem``)."""
    dense, expert = weight_bytes(config, elem)
    dense += bf16_bytes_of_fp8_model(config) if fp8_weights else 0
    experts = config.num_hidden_layers * expected_unique_experts(config, batch) * expert
    kv = batch * context * kv_bytes_per_token(config, kv_elem or elem)
    return (dense + experts + kv) / bandwidth


def prefill_floor_s(config: ModelConfig, tokens: int, elem: int, bandwidth: float, flops: float) -> float:
    """max(bytes / bandwidth, FLOPs / matmul rate) for one prompt of `tokens` tokens."""
    dense, expert = weight_bytes(config, elem)
    read = dense + config.num_hidden_layers * expected_unique_experts(config, tokens) * expert
    active_params = dense / elem + config.num_hidden_layers * config.num_experts_per_tok * expert / elem
    attn_flops = 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * tokens * tokens
    return max(read / bandwidth, (2 * active_params * tokens + attn_flops) / flops)
