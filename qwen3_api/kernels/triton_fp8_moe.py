"""Block-FP8 fused mixture-of-experts in Triton (W8A8): the bf16 fused MoE of triton_moe.py with FP8 experts.

Same plan as triton_moe.py (pairs sorted by expert into BLOCK_M tiles by ``moe_align_block_size``, gate+up GEMM
with SiLU(gate)*up fused before the store, down GEMM scaled by the routing weight, top-k rows summed), with the
arithmetic of triton_fp8_linear.py: each BLOCK_K = block_k step quantizes the activation tile per row (the
token-group scales vLLM and SGLang compute in a separate launch) and runs one FP8 dot, promoted to the float32
accumulator with the activation and weight block scales. The gate's and the up's weight scales are two row
ranges of w13_scale_inv (model/fp8.py's layout), so the intermediate size need not be a multiple of the block.

Block sizes come from the tuned table for dtype ``fp8_w8a8`` (moe_config_table.py); BLOCK_SIZE_K is always the
checkpoint's block_k (one weight scale per K step).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qwen3_api.kernels.moe_config_table import MoEConfig, get_moe_config
from qwen3_api.kernels.triton_fp8 import fp8_dot, quantize_rows, uses_fp8_dot
from qwen3_api.kernels.triton_moe import moe_align_block_size

FP8 = torch.float8_e4m3fn


@triton.jit
def _fp8_moe_gemm_kernel(
    a_ptr, b_ptr, bs_ptr, c_ptr,
    topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, num_padded_ptr,
    N, K, num_valid, up_scale_row,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_bse, stride_bsn, stride_bsk,
    stride_cm, stride_cn,
    A_ROW_DIV: tl.constexpr, FUSE_SILU: tl.constexpr, MUL_WEIGHT: tl.constexpr, FP8_DOT: tl.constexpr,
    GROUP_N: tl.constexpr, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):  # fmt: skip
    """C[pair, n] = A[pair // A_ROW_DIV] . B[expert(pair)][n] in W8A8 for the sorted, padded pairs of one tile.

    With FUSE_SILU, B has 2N rows (gate then up; the up's scales start at row ``up_scale_row`` of the scales)
    and C[pair, n] = silu(gate_n) * up_n. With MUL_WEIGHT, each row is scaled by its routing weight.
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(tl.load(num_padded_ptr), BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    if group_size_m <= 0:
        return  # past the padded length of this batch (the grid is a static bound)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    if pid_n >= num_pid_n:
        return

    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    pair = tl.load(sorted_ids_ptr + offs_m)
    row_mask = pair < num_valid
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_ptrs = a_ptr + (pair // A_ROW_DIV).to(tl.int64)[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bn + offs_k[:, None] * stride_bk
    bs_ptrs = bs_ptr + expert * stride_bse + (offs_n // GROUP_N) * stride_bsn

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    if FUSE_SILU:
        acc_up = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
        up_ptrs = b_ptrs + N * stride_bn
        up_s_ptrs = bs_ptr + expert * stride_bse + (up_scale_row + offs_n // GROUP_N) * stride_bsn
    for kb in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_mask = offs_k < K - kb * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        a_q, a_s = quantize_rows(a)
        b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        b_s = tl.load(bs_ptrs + kb * stride_bsk, mask=n_mask, other=0.0)
        acc += fp8_dot(a_q, b, FP8_DOT) * a_s[:, None] * b_s[None, :]
        if FUSE_SILU:
            u = tl.load(up_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            u_s = tl.load(up_s_ptrs + kb * stride_bsk, mask=n_mask, other=0.0)
            acc_up += fp8_dot(a_q, u, FP8_DOT) * a_s[:, None] * u_s[None, :]
            up_ptrs += BLOCK_SIZE_K * stride_bk
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk

    if FUSE_SILU:
        acc = acc * tl.sigmoid(acc) * acc_up
    if MUL_WEIGHT:
        w = tl.load(topk_weights_ptr + pair, mask=row_mask, other=0.0)
        acc = acc * w[:, None]
    c_ptrs = c_ptr + pair.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=row_mask[:, None] & n_mask[None, :])


def _launch(
    a: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    c: torch.Tensor,
    topk_weights: torch.Tensor,
    align: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n: int,
    block: tuple[int, int],
    a_row_div: int,
    fuse_silu: bool,
    config: MoEConfig,
) -> None:
    sorted_ids, expert_ids, num_padded = align
    bm, bn = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"]
    grid = (triton.cdiv(sorted_ids.numel(), bm) * triton.cdiv(n, bn),)
    extra = {k: config[k] for k in ("num_warps", "num_stages") if k in config}
    _fp8_moe_gemm_kernel[grid](
        a, b, b_scale, c, topk_weights, sorted_ids, expert_ids, num_padded,
        n, a.shape[1], topk_weights.numel(), b_scale.shape[1] // 2,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2),
        b_scale.stride(0), b_scale.stride(1), b_scale.stride(2), c.stride(0), c.stride(1),
        A_ROW_DIV=a_row_div, FUSE_SILU=fuse_silu, MUL_WEIGHT=not fuse_silu, FP8_DOT=uses_fp8_dot(),
        GROUP_N=block[0], BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=block[1],
        GROUP_SIZE_M=config["GROUP_SIZE_M"], **extra,
    )  # fmt: skip


def fused_moe_fp8(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    w13_scale_inv: torch.Tensor,
    w2_scale_inv: torch.Tensor,
    block: tuple[int, int],
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    config: MoEConfig | None = None,
) -> torch.Tensor:
    """sum_k topk_weights[t,k] * (silu(h W_gate^T) * (h W_up^T)) W_down^T of expert topk_ids[t,k] -> [T, H] in
    hidden.dtype, with FP8 experts: w13 [E, 2I, H] and w2 [E, H, I] float8_e4m3fn; w13_scale_inv
    [E, 2*ceil(I/bn), ceil(H/bk)] (gate blocks, then up blocks) and w2_scale_inv [E, ceil(H/bn), ceil(I/bk)]
    float32; block = (bn, bk). ``config`` overrides the table (tests, tuning); its BLOCK_SIZE_K is ignored.
    """
    num_tokens, hidden_size = hidden.shape
    num_experts, two_i, _ = w13.shape
    inter = two_i // 2
    top_k = topk_ids.shape[1]
    if num_tokens == 0:
        return torch.empty_like(hidden)
    config = config or get_moe_config(num_tokens, num_experts, inter, FP8)
    hidden = hidden.contiguous()
    weights = topk_weights.to(torch.float32).contiguous()
    align = moe_align_block_size(topk_ids, config["BLOCK_SIZE_M"], num_experts)
    act = torch.empty(num_tokens * top_k, inter, dtype=hidden.dtype, device=hidden.device)
    # BLOCK_SIZE_N counts w13 rows (gate and up together), as in triton_moe.py's tables
    gate_up_config = {**config, "BLOCK_SIZE_N": max(16, config["BLOCK_SIZE_N"] // 2)}
    _launch(hidden, w13, w13_scale_inv, act, weights, align, inter, block, top_k, True, gate_up_config)
    out = torch.empty(num_tokens * top_k, hidden_size, dtype=hidden.dtype, device=hidden.device)
    _launch(act, w2, w2_scale_inv, out, weights, align, hidden_size, block, 1, False, config)
    return out.view(num_tokens, top_k, hidden_size).sum(dim=1)
