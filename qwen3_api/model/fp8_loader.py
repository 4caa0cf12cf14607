"""Loading block-FP8 checkpoints (model/fp8.py): the scales' place in the layout, and the copy of FP8 tensors.

Every converted weight ``<module>.weight`` (float8_e4m3fn) comes with ``<module>.weight_scale_inv``. Where the
model keeps the projection in FP8, both are copied as they are (the scale as float32) into the projection's
``weight`` and ``weight_scale_inv``, at the block rows of its part of a merged projection. Where it does not
(the CPU path), the scale is read first (they are small: 7 MB for Qwen3-30B-A3B) and the weight is dequantized
into the model-dtype parameter one row of blocks at a time, so the peak memory stays the model's size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from qwen3_api.kernels.fp8_blocks import FP8_DTYPE, dequantize_into
from qwen3_api.model.fp8 import SCALE_SUFFIX
from qwen3_api.model.tensor_target import TensorTarget

if TYPE_CHECKING:
    from qwen3_api.model.qwen3 import Qwen3ForCausalLM
    from qwen3_api.model.safetensors_mmap import SafetensorsFile


def add_scale_targets(model: Qwen3ForCausalLM, layout: dict[str, TensorTarget]) -> None:
    """Add the ``weight_scale_inv`` entry of every weight an FP8 checkpoint converts to ``layout`` (a no-op for
    other checkpoints): the block rows of the projection's scale parameter when it is kept in FP8, else a
    shape-only (meta) target, the scale being read by ``Fp8Copier`` together with its weight."""
    plan = getattr(model, "fp8", None)
    if plan is None:
        return
    params = dict(model.named_parameters(remove_duplicate=False))
    scale_of = {
        id(params[n.removesuffix(SCALE_SUFFIX)]): params[n] for n in params if n.endswith(SCALE_SUFFIX)
    }
    cfg = plan.config
    for name, target in list(layout.items()):
        # only linear layers are converted (transformers' rule): 2-D weights, the embedding excepted
        linear = name.endswith(".weight") and target.view().dim() == 2 and name != "model.embed_tokens.weight"
        if not linear or not cfg.converts(name.removesuffix(".weight")):
            continue
        shape = cfg.scale_shape(*target.view().shape)
        scale = scale_of.get(id(target.param))
        if scale is None:
            layout[name + SCALE_SUFFIX] = TensorTarget(torch.empty(shape, device="meta"))
        else:
            # every merged part but the last is whole blocks (Fp8Plan.holds_fp8), and w13's up rows start at the
            # gate's block count: both are ceil(row_start / block_n)
            start = -(-target.row_start // cfg.block_n)
            layout[name + SCALE_SUFFIX] = TensorTarget(scale, target.expert, start, shape[0])


class Fp8Copier:
    """Copies an FP8 checkpoint's tensors into the model: the loader's ``copy`` for FP8 checkpoints."""

    def __init__(
        self, model: Qwen3ForCausalLM, layout: dict[str, TensorTarget], files: list[SafetensorsFile]
    ):
        plan = model.fp8
        assert plan is not None
        self.block = (plan.config.block_n, plan.config.block_k)
        # the scales of weights dequantized at load, read before any weight (a weight may precede its scale)
        self.scales = {
            name: f.view(name).float().clone()
            for f in files
            for name in f.tensors
            if name.endswith(SCALE_SUFFIX) and name in layout and layout[name].param.is_meta
        }

    def copy(self, name: str, target: TensorTarget, src: torch.Tensor) -> bool:
        """Handle one checkpoint tensor if it needs FP8 care: True when done (dequantized, or a scale already
        read), False for a plain copy by the loader (FP8 into FP8, scales into kept scales, bf16 tensors)."""
        if target.param.is_meta:
            return True  # a scale, consumed with its weight
        if src.dtype != FP8_DTYPE or target.param.dtype == FP8_DTYPE:
            return False
        scale = self.scales.get(name + SCALE_SUFFIX)
        if scale is None:
            raise ValueError(f"{name} is stored in FP8 without a {name}{SCALE_SUFFIX} (quantization_config?)")
        dequantize_into(target.view(), src, scale, self.block)
        return True
