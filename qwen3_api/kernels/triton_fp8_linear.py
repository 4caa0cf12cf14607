"""Block-FP8 linear in Triton (W8A8, the CUDA path of FP8 checkpoints): y = x @ W^T with W in float8_e4m3fn and
one float32 scale per [block_n, block_k] block of W.

As vLLM's and SGLang's w8a8_block_fp8_matmul on Hopper: the activations are quantized per token and group of
block_k columns (scale = amax / 448), each K step is one block_k-wide FP8 tensor-core dot, and its float32 result
is multiplied by the row's activation scale and the column's weight scale before it joins the float32
accumulator (FP8 dots accumulate with few bits: promoting every 128 columns keeps the error at bf16's level).
Unlike them the activation quantization happens inside the GEMM, on the tile just loaded: a K tile is exactly
one group, so the numbers are the same, and no separate quantization launch or FP8 copy of x is needed.

Block sizes are a heuristic by batch size, not tuned (the MoE carries most of the weights; see tune_moe.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qwen3_api.kernels.triton_fp8 import fp8_dot, quantize_rows, uses_fp8_dot


@triton.jit
def _fp8_linear_kernel(
    a_ptr, b_ptr, bs_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_bsn, stride_bsk, stride_cm, stride_cn,
    GROUP_N: tl.constexpr, HAS_BIAS: tl.constexpr, FP8_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr,
):  # fmt: skip
    """C[m, n] = sum over K blocks of (A_q . B) * a_scale[m, kb] * b_scale[n // GROUP_N, kb]; BLOCK_K = block_k."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # grouped ordering: neighbouring programs share weight tiles in L2
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_n.to(tl.int64)[None, :] * stride_bn + offs_k[:, None] * stride_bk
    bs_ptrs = bs_ptr + (offs_n // GROUP_N) * stride_bsn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        k_mask = offs_k < K - kb * BLOCK_K
        a = tl.load(a_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        a_q, a_s = quantize_rows(a)
        b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        b_s = tl.load(bs_ptrs + kb * stride_bsk, mask=n_mask, other=0.0)
        acc += fp8_dot(a_q, b, FP8_DOT) * a_s[:, None] * b_s[None, :]
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def linear_config(m: int) -> dict[str, int]:
    """Tile sizes by the number of rows: short, narrow tiles for decode (more programs over N, as decode reads
    the weight once), square ones for prefill. A heuristic: the H200 has not timed them."""
    if m <= 16:
        return {"BLOCK_M": 16, "BLOCK_N": 32, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 4}
    if m <= 64:
        return {"BLOCK_M": 32, "BLOCK_N": 64, "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 4}
    return {"BLOCK_M": 64, "BLOCK_N": 128, "GROUP_SIZE_M": 8, "num_warps": 8, "num_stages": 3}


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block: tuple[int, int],
    bias: torch.Tensor | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """x [..., K] (bf16 / fp16 / fp32) @ W^T -> [..., N] in x.dtype; weight [N, K] float8_e4m3fn,
    weight_scale_inv [ceil(N/bn), ceil(K/bk)] float32, block = (bn, bk)."""
    n, k = weight.shape
    lead = x.shape[:-1]
    a = x.reshape(-1, k)
    m = a.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return out.view(*lead, n)
    cfg = dict(config or linear_config(m))
    block_m, block_n = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N")
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    _fp8_linear_kernel[grid](
        a, weight, weight_scale_inv, bias if bias is not None else weight_scale_inv, out,
        m, n, k,
        a.stride(0), a.stride(1), weight.stride(0), weight.stride(1),
        weight_scale_inv.stride(0), weight_scale_inv.stride(1), out.stride(0), out.stride(1),
        GROUP_N=block[0], HAS_BIAS=bias is not None, FP8_DOT=uses_fp8_dot(),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block[1], **cfg,
    )  # fmt: skip
    return out.view(*lead, n)
