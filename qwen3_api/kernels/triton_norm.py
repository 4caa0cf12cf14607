"""RMSNorm in one Triton kernel, for the CUDA path.

The torch RMSNorm is eight kernels in bf16 (upcast, square, mean, add eps, rsqrt, scale, downcast, weight);
a decode step runs it 4 times per layer (input, post-attention, per-head q and k norms), about 1,500 tiny
launches over 48 layers. Here it is one launch per norm, with the same arithmetic: the row is normalised
in float32, rounded to the input dtype, then multiplied by the weight and rounded again, as transformers does.
Whether those launches matter is for benchmarks/gpu_breakdown.py to show on the GPU (not measured here).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr, w_ptr, out_ptr, inner_rows, stride_outer, stride_inner, n, eps,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """One row of n values: out = w * round(x / sqrt(mean(x^2) + eps)). Rows are (outer, inner) strided."""
    row = tl.program_id(0)
    base = (row // inner_rows).to(tl.int64) * stride_outer + (row % inner_rows).to(tl.int64) * stride_inner
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    inv = tl.rsqrt(tl.sum(x * x, 0) / n + eps)
    y = (x * inv).to(x_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row.to(tl.int64) * n + offs, (w * y).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim of x [..., n] (2-D, or 3-D such as per-head [T, heads, D]) -> contiguous."""
    n, shape = x.shape[-1], x.shape
    if x.stride(-1) != 1 or x.dim() > 3:
        x = x.contiguous()
    if x.dim() == 3:
        inner_rows, stride_outer, stride_inner = x.shape[1], x.stride(0), x.stride(1)
    else:
        x = x.reshape(-1, n)
        inner_rows, stride_outer, stride_inner = 1, x.stride(0), 0
    out = torch.empty(shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rows = out.numel() // n
    if rows:
        _rms_norm_kernel[(rows,)](
            x, weight, out, inner_rows, stride_outer, stride_inner, n, eps, BLOCK=triton.next_power_of_2(n)
        )
    return out
