"""Block-FP8 arithmetic in plain torch: the loader's dequantization, the test checkpoints' quantization, and the
float32 references of the Triton W8A8 kernels (triton_fp8_linear.py, triton_fp8_moe.py).

A weight [rows, cols] in float8_e4m3fn has one float32 ``scale_inv`` per [bn, bk] block: W = weight * scale_inv.
Activations are quantized per token and group of bk columns at run time (scale = amax / 448).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite float8_e4m3fn


def dequantize(weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """float32 W = weight * scale per [bn, bk] block (weight [..., rows, cols] float8, scale [..., R, C])."""
    bn, bk = block
    rows, cols = weight.shape[-2:]
    full = scale.float().repeat_interleave(bn, dim=-2).repeat_interleave(bk, dim=-1)
    return weight.float() * full[..., :rows, :cols]


def dequantize_into(
    dest: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]
) -> None:
    """dest[rows, cols] (any float dtype and strides) = weight * scale, one row of blocks at a time, so no
    full-size float32 copy of the tensor is ever made (the loader's peak memory stays the model's size)."""
    bn = block[0]
    with torch.no_grad():
        for i, start in enumerate(range(0, weight.shape[0], bn)):
            rows = weight[start : start + bn].to(dest.device)  # on a GPU the arithmetic runs there
            dest[start : start + bn].copy_(dequantize(rows, scale[i : i + 1].to(dest.device), block))


def quantize(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-quantize w [rows, cols] as the official checkpoints are: scale_inv = amax(|block|) / 448 (float32),
    weight = w / scale_inv rounded to float8_e4m3fn. Returns (weight, weight_scale_inv)."""
    bn, bk = block
    rows, cols = w.shape
    r, c = -(-rows // bn), -(-cols // bk)
    padded = torch.zeros(r * bn, c * bk, dtype=torch.float32, device=w.device)
    padded[:rows, :cols] = w.float()
    tiles = padded.view(r, bn, c, bk)
    scale = (tiles.abs().amax(dim=(1, 3)) / FP8_MAX).clamp_min(1e-12)
    q = (tiles / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).view(r * bn, c * bk)[:rows, :cols]
    return q.to(FP8_DTYPE).contiguous(), scale


def quantize_activations(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token-group dynamic quantization (vLLM's and SGLang's per_token_group_quant_fp8): each run of
    ``group`` columns of a row gets scale = max(amax, 1e-10) / 448. Returns (x / scale rounded to FP8, as
    float32; scales [rows, ceil(cols/group)])."""
    rows, cols = x.shape
    g = -(-cols // group)
    padded = torch.zeros(rows, g * group, dtype=torch.float32, device=x.device)
    padded[:, :cols] = x.float()
    tiles = padded.view(rows, g, group)
    scale = tiles.abs().amax(dim=-1).clamp_min(1e-10) / FP8_MAX
    q = (tiles / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).float()
    return q.view(rows, g * group)[:, :cols], scale


def fake_quantize_activations(x: torch.Tensor, group: int) -> torch.Tensor:
    """x as the W8A8 kernels see it: quantized per token group and multiplied back (float32)."""
    q, s = quantize_activations(x, group)
    return q * s.repeat_interleave(group, dim=-1)[:, : x.shape[1]]


def w8a8_linear_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    block: tuple[int, int],
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """float32 x @ W^T as the W8A8 kernels compute it: x quantized per token group of block_k columns, the FP8
    weight dequantized by its block scales."""
    out = fake_quantize_activations(x, block[1]) @ dequantize(weight, scale, block).T
    return out if bias is None else out + bias.float()


def dequantize_w13(w13: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """float32 [E, 2I, H] of FP8 w13 whose scales hold the gate's row blocks, then the up's (model/fp8.py)."""
    inter, half = w13.shape[1] // 2, scale.shape[1] // 2
    gate = dequantize(w13[:, :inter], scale[:, :half], block)
    up = dequantize(w13[:, inter:], scale[:, half:], block)
    return torch.cat([gate, up], dim=1)


def w8a8_moe_reference(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    w13_scale: torch.Tensor,
    w2_scale: torch.Tensor,
    block: tuple[int, int],
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """float32 FP8 MoE as triton_fp8_moe computes it: the hidden rows quantized per token group, the SwiGLU
    activations rounded to hidden.dtype (the kernel's intermediate) and quantized again, each pair's output
    times its routing weight; one expert at a time (dequantized on its device), so it also runs at the real shape."""
    inter = w2.shape[-1]
    x = fake_quantize_activations(hidden, block[1])
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    flat = topk_ids.reshape(-1)
    for e in flat.unique().tolist():
        pairs = (flat == e).nonzero().flatten()
        tokens = pairs // topk_ids.shape[1]
        gate_up = x[tokens] @ dequantize_w13(w13[e : e + 1], w13_scale[e : e + 1], block)[0].T
        act = (F.silu(gate_up[:, :inter]) * gate_up[:, inter:]).to(hidden.dtype).float()
        y = fake_quantize_activations(act, block[1]) @ dequantize(w2[e], w2_scale[e], block).T
        out.index_add_(0, tokens, y * topk_weights.reshape(-1)[pairs].float()[:, None])
    return out


def quantize_experts(
    w13: torch.Tensor, w2: torch.Tensor, block: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w13, w2, w13_scale_inv, w2_scale_inv) in FP8 from float experts w13 [E, 2I, H], w2 [E, H, I], quantized
    as a checkpoint stores them (gate, up and down separately; w13's scales: the gate's blocks, then the up's)."""
    inter = w2.shape[-1]
    q13, s13, q2, s2 = [], [], [], []
    for e in range(w13.shape[0]):
        (gq, gs), (uq, us) = quantize(w13[e, :inter], block), quantize(w13[e, inter:], block)
        q13.append(torch.cat([gq, uq]))
        s13.append(torch.cat([gs, us]))
        dq, ds = quantize(w2[e], block)
        q2.append(dq)
        s2.append(ds)
    return torch.stack(q13), torch.stack(q2), torch.stack(s13), torch.stack(s2)
