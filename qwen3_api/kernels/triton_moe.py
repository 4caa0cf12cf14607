"""Fused mixture-of-experts in Triton (the vLLM / SGLang design), for the CUDA path.

One MoE layer is two grouped GEMMs over the (token, expert) pairs of the batch:

1. ``moe_align_block_size`` sorts the T*K pairs by expert and pads each expert's run to a multiple of
   BLOCK_M, so that every BLOCK_M-row tile of the sorted list belongs to exactly one expert: one Triton launch
   for decode-sized batches, torch sort ops for large ones. It never syncs with the host (the padded length
   is bounded statically), so it can live in a CUDA graph.
2. The gate+up GEMM reads hidden row ``pair // top_k`` straight from ``hidden``: the hidden states are never
   copied top_k times. Gate and up tiles are accumulated side by side and SiLU(gate)*up is applied before the
   store, so the [T*K, 2I] intermediate never reaches memory.
3. The down GEMM reads the [T*K, I] activations, multiplies each row by its routing weight and writes one
   [T*K, H] row per pair; the top-k rows of a token are then summed.

Block sizes come from a JSON table per (E, N, dtype, GPU name) with batch-size buckets (moe_config_table.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qwen3_api.kernels.moe_config_table import MoEConfig, get_moe_config
from qwen3_api.kernels.triton_utils import interpreting


@triton.jit
def _moe_gemm_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    topk_weights_ptr,
    sorted_ids_ptr,
    expert_ids_ptr,
    num_padded_ptr,
    N,
    K,
    num_valid,
    stride_am,
    stride_ak,
    stride_be,
    stride_bn,
    stride_bk,
    stride_cm,
    stride_cn,
    A_ROW_DIV: tl.constexpr,
    FUSE_SILU: tl.constexpr,
    MUL_WEIGHT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    """C[pair, n] = A[pair // A_ROW_DIV] . B[expert(pair)][n] for the sorted, padded pairs of one tile.

    With FUSE_SILU, B has 2N rows (gate then up) and C[pair, n] = silu(gate_n) * up_n.
    With MUL_WEIGHT, each row is scaled by its routing weight topk_weights.flat[pair].
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(tl.load(num_padded_ptr), BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    # Grouped ordering: neighbouring programs share B tiles of one expert in L2.
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    if group_size_m <= 0:
        return  # this program lies past the padded length of this batch (the grid is a static bound)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    if pid_n >= num_pid_n:
        return  # the tail of a partial last group

    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    pair = tl.load(sorted_ids_ptr + offs_m)
    row_mask = pair < num_valid
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)

    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_ptrs = a_ptr + (pair // A_ROW_DIV).to(tl.int64)[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bn + offs_k[:, None] * stride_bk

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    if FUSE_SILU:
        acc_up = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
        up_ptrs = b_ptrs + N * stride_bn
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_mask = offs_k < K - k * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if DOT_F32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        if FUSE_SILU:
            u = tl.load(up_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            if DOT_F32:
                u = u.to(tl.float32)
            acc_up = tl.dot(a, u, acc_up, input_precision=DOT_PRECISION)
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


@triton.jit
def _moe_align_kernel(
    ids_ptr, sorted_ids_ptr, expert_ids_ptr, num_padded_ptr, num_pairs, capacity,
    NUM_EXPERTS: tl.constexpr, E_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
    CHUNK: tl.constexpr, TILE_CHUNK: tl.constexpr,
):  # fmt: skip
    """moe_align_block_size in one program (one launch instead of ~30 small torch kernels per layer).

    Pass 1 counts the pairs of each expert; pass 2 gives each pair its stable rank within its expert (a
    cumulative sum over a one-hot [CHUNK, E] tile) and scatters it to padded_start[expert] + rank.
    """
    experts = tl.arange(0, E_PAD)
    counts = tl.zeros((E_PAD,), dtype=tl.int32)
    for start in range(0, num_pairs, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=E_PAD)  # E_PAD matches no expert
        counts += tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, 0)
    padded_start = padded_end - padded
    tl.store(num_padded_ptr, tl.sum(padded, 0))

    for start in range(0, capacity, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        tl.store(sorted_ids_ptr + offs, tl.zeros((CHUNK,), dtype=tl.int32) + num_pairs, mask=offs < capacity)
    tl.debug_barrier()  # the sentinel fill must land before the scatter overwrites part of it

    placed = tl.zeros((E_PAD,), dtype=tl.int32)
    for start in range(0, num_pairs, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=E_PAD)
        onehot = (ids[:, None] == experts[None, :]).to(tl.int32)
        rank = tl.cumsum(onehot, 0) - 1 + placed[None, :] + padded_start[None, :]
        dest = tl.sum(onehot * rank, 1)
        tl.store(sorted_ids_ptr + dest, offs, mask=offs < num_pairs)
        placed += tl.sum(onehot, 0)

    num_tiles = capacity // BLOCK_M
    for t0 in range(0, num_tiles, TILE_CHUNK):
        tiles = t0 + tl.arange(0, TILE_CHUNK)
        # the expert of a tile: how many experts' padded runs end at or before its start
        expert = tl.sum((padded_end[None, :] <= (tiles * BLOCK_M)[:, None]).to(tl.int32), 1)
        tl.store(expert_ids_ptr + tiles, tl.minimum(expert, NUM_EXPERTS - 1), mask=tiles < num_tiles)


# Above this many (token, expert) pairs the one-program kernel's serial chunks cost more than the ~30 torch
# launches of the sort-based path (prefill); below it (decode) one launch wins. Not tuned: measure on the GPU.
ALIGN_KERNEL_MAX_PAIRS = 2048


def moe_align_block_size(
    topk_ids: torch.Tensor, block_m: int, num_experts: int, *, use_kernel: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the T*K (token, expert) pairs by expert, each expert's run padded to a multiple of block_m.

    Returns (sorted_ids, expert_ids, num_padded): sorted_ids [P] holds pair indices (token*K + k), with the
    sentinel T*K in padding slots; expert_ids [P // block_m] the expert of each tile; num_padded (1-element,
    on device) the used length. P is a static upper bound, so nothing here waits on the device.
    ``use_kernel`` picks the one-launch Triton kernel (default: when T*K <= ALIGN_KERNEL_MAX_PAIRS).
    """
    flat = topk_ids.reshape(-1)
    n = flat.numel()
    device = flat.device
    # At most min(E, n) experts are non-empty and each wastes < block_m slots.
    capacity = n + min(num_experts, n) * (block_m - 1)
    capacity = triton.cdiv(capacity, block_m) * block_m
    if use_kernel if use_kernel is not None else n <= ALIGN_KERNEL_MAX_PAIRS:
        sorted_ids = torch.empty(capacity, dtype=torch.int32, device=device)
        expert_ids = torch.empty(capacity // block_m, dtype=torch.int32, device=device)
        num_padded = torch.empty(1, dtype=torch.int32, device=device)
        e_pad = triton.next_power_of_2(num_experts)
        _moe_align_kernel[(1,)](
            flat.contiguous(), sorted_ids, expert_ids, num_padded, n, capacity,
            NUM_EXPERTS=num_experts, E_PAD=e_pad, BLOCK_M=block_m,
            CHUNK=max(16, min(128, 8192 // e_pad)), TILE_CHUNK=max(16, min(128, 8192 // e_pad)),
        )  # fmt: skip
        return sorted_ids, expert_ids, num_padded

    flat = flat.to(torch.int64)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.index_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    padded_start = padded_end - padded
    count_start = torch.cumsum(counts, 0) - counts

    order = torch.sort(flat, stable=True).indices
    sorted_expert = flat[order]
    rank = torch.arange(n, device=device) - count_start[sorted_expert]
    sorted_ids = torch.full((capacity,), n, dtype=torch.int32, device=device)
    sorted_ids[padded_start[sorted_expert] + rank] = order.to(torch.int32)

    tile_start = torch.arange(0, capacity, block_m, device=device)
    expert_ids = torch.searchsorted(padded_end, tile_start, right=True).clamp_(max=num_experts - 1)
    return sorted_ids, expert_ids.to(torch.int32), padded_end[-1:].to(torch.int32)


def _launch(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    topk_weights: torch.Tensor,
    align: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n: int,
    a_row_div: int,
    fuse_silu: bool,
    mul_weight: bool,
    config: MoEConfig,
) -> None:
    sorted_ids, expert_ids, num_padded = align
    bm, bn = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"]
    grid = (triton.cdiv(sorted_ids.numel(), bm) * triton.cdiv(n, bn),)
    extra = {k: config[k] for k in ("num_warps", "num_stages") if k in config}
    _moe_gemm_kernel[grid](
        a, b, c, topk_weights, sorted_ids, expert_ids, num_padded,
        n, a.shape[1], topk_weights.numel(),
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2), c.stride(0), c.stride(1),
        A_ROW_DIV=a_row_div, FUSE_SILU=fuse_silu, MUL_WEIGHT=mul_weight,
        DOT_PRECISION="ieee" if a.dtype == torch.float32 else "tf32", DOT_F32=interpreting(),
        BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=config["BLOCK_SIZE_K"],
        GROUP_SIZE_M=config["GROUP_SIZE_M"], **extra,
    )  # fmt: skip


def fused_moe(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    config: MoEConfig | None = None,
) -> torch.Tensor:
    """sum_k topk_weights[t,k] * (silu(h W_gate^T) * (h W_up^T)) W_down^T of expert topk_ids[t,k], [T, H].

    hidden [T, H]; w13 [E, 2I, H] (gate rows then up rows); w2 [E, H, I]; topk_weights [T, K] float32;
    topk_ids [T, K]. ``config`` overrides the table lookup (tests, tuning).
    """
    num_tokens, hidden_size = hidden.shape
    num_experts, two_i, _ = w13.shape
    inter = two_i // 2
    top_k = topk_ids.shape[1]
    if num_tokens == 0:
        return torch.empty_like(hidden)
    config = config or get_moe_config(num_tokens, num_experts, inter, hidden.dtype)
    hidden = hidden.contiguous()
    weights = topk_weights.to(torch.float32).contiguous()
    align = moe_align_block_size(topk_ids, config["BLOCK_SIZE_M"], num_experts)

    act = torch.empty(num_tokens * top_k, inter, dtype=hidden.dtype, device=hidden.device)
    # BLOCK_SIZE_N counts w13 rows as in vLLM's tables (gate and up together): the fused tile takes half as
    # many columns of each, so a table entry means the same registers and shared memory as there.
    gate_up_config = {**config, "BLOCK_SIZE_N": max(16, config["BLOCK_SIZE_N"] // 2)}
    _launch(hidden, w13, act, weights, align, inter, top_k, True, False, gate_up_config)
    out = torch.empty(num_tokens * top_k, hidden_size, dtype=hidden.dtype, device=hidden.device)
    _launch(act, w2, out, weights, align, hidden_size, 1, False, True, config)
    # One reduction kernel; torch accumulates bf16 sums in float32 and rounds once.
    return out.view(num_tokens, top_k, hidden_size).sum(dim=1)
