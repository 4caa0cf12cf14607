"""GGUF weights in the model, and the kernel set that runs them: quantized linears, MoE and embeddings.

A :class:`QuantTensor` is one weight as the file stores it (raw ggml blocks, a view of the memory-mapped file;
never dequantized in memory); :class:`QuantGroup` is several that read the same input (q / k / v, a dense MLP's
gate / up: one call, the activations quantized once, the outputs side by side); :class:`QuantExperts` is a MoE
layer's gate and up expert stacks. They stand where the model's float weights would, and :func:`quant_kernels`
is the kernel set that understands them (any plain tensor, e.g. the F32 router, takes the torch path as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from qwen3_api.kernels import Kernels, torch_attention, torch_moe, torch_pointwise
from qwen3_api.kernels.quant_native import ops
from qwen3_api.kernels.quant_types import QuantType
from qwen3_api.kernels.torch_linear import CpuLinear


@dataclass(frozen=True, eq=False, slots=True)
class QuantTensor:
    """A weight [rows, cols] or an expert stack [experts, rows, cols] in ggml blocks of ``qtype``."""

    raw: torch.Tensor  # uint8, contiguous: the blocks, row after row (expert after expert)
    qtype: QuantType
    shape: tuple[int, ...]
    # what the model asks of its weights: activations are float32 on the CPU
    dtype: ClassVar[torch.dtype] = torch.float32
    device: ClassVar[torch.device] = torch.device("cpu")

    def __post_init__(self) -> None:
        expected = self.qtype.row_bytes(self.shape[-1]) * int(torch.Size(self.shape[:-1]).numel())
        if self.raw.dtype != torch.uint8 or self.raw.numel() != expected or not self.raw.is_contiguous():
            raise ValueError(f"{self.qtype.name} {list(self.shape)}: expected {expected} contiguous bytes, "
                             f"got {self.raw.numel()} {self.raw.dtype}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.raw.numel()

    def dequantize(self) -> torch.Tensor:
        """The float32 values (tests and references only: the model never holds them)."""
        rows = int(torch.Size(self.shape[:-1]).numel())
        return ops().dequant(self.raw, self.qtype.id, rows, self.shape[-1]).view(self.shape)

    def __getitem__(self, expert: int) -> QuantTensor:
        """One expert of a stack (a view)."""
        if self.ndim != 3:
            raise TypeError("only an expert stack [experts, rows, cols] is indexed")
        size = self.raw.numel() // self.shape[0]
        return QuantTensor(self.raw[expert * size:(expert + 1) * size], self.qtype, self.shape[1:])


@dataclass(frozen=True, eq=False, slots=True)
class QuantGroup:
    """Weights that share their input, run as one [sum of rows, cols] linear."""

    parts: tuple[QuantTensor, ...]
    dtype: ClassVar[torch.dtype] = torch.float32
    device: ClassVar[torch.device] = torch.device("cpu")

    @property
    def shape(self) -> tuple[int, int]:
        return sum(p.shape[0] for p in self.parts), self.parts[0].shape[1]

    def dequantize(self) -> torch.Tensor:
        return torch.cat([p.dequantize() for p in self.parts])


@dataclass(frozen=True, eq=False, slots=True)
class QuantExperts:
    """A MoE layer's gate and up stacks [experts, inter, hidden] (the model's ``w13``)."""

    gate: QuantTensor
    up: QuantTensor

    @property
    def shape(self) -> tuple[int, int, int]:
        e, inter, hidden = self.gate.shape
        return e, 2 * inter, hidden

    def dequantize(self) -> torch.Tensor:
        return torch.cat([self.gate.dequantize(), self.up.dequantize()], dim=1)


def _parts(weight: QuantTensor | QuantGroup) -> tuple[QuantTensor, ...]:
    return weight.parts if isinstance(weight, QuantGroup) else (weight,)


@dataclass(slots=True)
class QuantLinear(CpuLinear):
    """CpuLinear that also runs quantized weights (quant_native.cpp's qlinear), and looks up embedding rows."""

    def __call__(self, x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ANN001
        if isinstance(weight, QuantTensor | QuantGroup):
            parts = _parts(weight)
            if x.shape[-1] != weight.shape[-1]:  # the kernel sizes the rows by x: a narrower x would read garbage
                raise RuntimeError(f"quantized linear: x's last dimension {x.shape[-1]} != weight columns "
                                   f"{weight.shape[-1]}")
            out = ops().qlinear(x.float(), [p.raw for p in parts], [p.qtype.id for p in parts],
                                [p.shape[0] for p in parts])
            return out if bias is None else out + bias
        return CpuLinear.__call__(self, x, weight, bias)

    @staticmethod
    def embed(ids: torch.Tensor, weight) -> torch.Tensor:  # noqa: ANN001
        """Rows of the embedding for token ids, dequantized row by row (only the rows asked for)."""
        if isinstance(weight, QuantTensor):
            return ops().embed(weight.raw, weight.qtype.id, weight.shape[0], weight.shape[1], ids)
        return F.embedding(ids, weight)

    def warm_up(self, lm_head) -> None:  # noqa: ANN001
        """Build (first run) and self-test the quantized kernels before the first request."""
        if isinstance(lm_head, QuantTensor | QuantGroup):
            ops()
            return
        CpuLinear.warm_up(self, lm_head)


def fused_moe(hidden: torch.Tensor, w13, w2, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """kernels.fused_moe for quantized experts (quant_native.cpp's moe), else the torch one."""
    if isinstance(w13, QuantExperts):
        experts, inter, _ = w13.gate.shape
        return ops().moe(hidden.float(), topk_ids, topk_weights, w13.gate.raw, w13.gate.qtype.id, w13.up.raw,
                         w13.up.qtype.id, w2.raw, w2.qtype.id, experts, inter)
    return torch_moe.fused_moe(hidden, w13, w2, topk_weights, topk_ids)


def quant_kernels() -> Kernels:
    """The CPU set for GGUF models: quantized linear / MoE / embedding, torch attention and pointwise ops."""
    return Kernels(
        name="gguf-cpu",
        linear=QuantLinear(),
        fused_moe=fused_moe,
        paged_attention=torch_attention.paged_attention,
        store_kvcache=torch_attention.store_kvcache,
        rms_norm=torch_pointwise.rms_norm,
        rotary=torch_pointwise.rotary,
    )
