"""Block-FP8 checkpoints (the official Qwen3-*-FP8 format): the config, which projections it covers, their
parameters in memory, and the block arithmetic the loader, the kernels' references and the test helpers share.

The format (DeepSeek-V3's, which Qwen ships): config.json has ``quantization_config = {"quant_method": "fp8",
"fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128], "modules_to_not_convert": [...]}``;
every converted projection stores ``weight`` as float8_e4m3fn [out, in] and ``weight_scale_inv``
[ceil(out/128), ceil(in/128)] (float32 or bf16) with W = weight * weight_scale_inv block by block. What
``modules_to_not_convert`` names (Qwen lists the routers, the norms and lm_head) stays in bf16; lm_head always
does (transformers' rule).

In memory a converted projection is either kept in FP8 (``weight`` float8 plus ``weight_scale_inv`` float32,
the GEMM kernels of the model's kernel set reading both: W8A8 on the GPU) or dequantized at load into a plain
weight of the model dtype (the CPU, GPUs without FP8 tensor cores, kernel sets without FP8 GEMMs). ``Fp8Plan``
makes that choice once per model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from qwen3_api.kernels.fp8_blocks import FP8_DTYPE
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.errors import ConfigError

logger = logging.getLogger(__name__)

SCALE_SUFFIX = (
    "_scale_inv"  # checkpoint: <name>.weight_scale_inv beside <name>.weight; ours: w13_scale_inv ...
)
# Always kept in the model dtype whatever the list says (transformers does the same for the output head).
_NEVER_CONVERTED = ("lm_head",)


@dataclass(frozen=True, slots=True)
class Fp8Config:
    """A checkpoint's block-FP8 ``quantization_config``."""

    block_n: int = 128  # rows (output features) per scale block
    block_k: int = 128  # columns (input features) per scale block
    modules_to_not_convert: tuple[str, ...] = ()
    _skipped: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_skipped", frozenset((*self.modules_to_not_convert, *_NEVER_CONVERTED)))

    @classmethod
    def from_dict(cls, q: dict[str, Any]) -> Fp8Config:
        """Validate a quantization_config; ConfigError names what this server cannot run."""
        method = q.get("quant_method")
        if method != "fp8":
            raise ConfigError(
                f"unsupported quantization {method!r}: this server runs unquantized checkpoints and block-FP8 "
                "ones (quant_method 'fp8', as Qwen/Qwen3-30B-A3B-FP8)"
            )
        if q.get("fmt", "e4m3") != "e4m3":
            raise ConfigError(f"unsupported FP8 format {q.get('fmt')!r}; only 'e4m3' (float8_e4m3fn)")
        if q.get("activation_scheme", "dynamic") != "dynamic":
            raise ConfigError(
                f"unsupported FP8 activation_scheme {q.get('activation_scheme')!r}; only 'dynamic' (per-token-group "
                "activation scales computed at run time)"
            )
        block = q.get("weight_block_size")
        if not (
            isinstance(block, list | tuple)
            and len(block) == 2
            and all(isinstance(b, int) and b > 0 for b in block)
        ):
            raise ConfigError(
                f"FP8 weight_block_size must be two positive ints [rows, cols] (per-tensor FP8 is not supported); "
                f"got {block!r}"
            )
        skip = tuple(str(m) for m in (q.get("modules_to_not_convert") or q.get("ignored_layers") or ()))
        return cls(int(block[0]), int(block[1]), skip)

    def converts(self, module: str) -> bool:
        """Whether the checkpoint stores this module's weight in FP8 (``module``: its HF name, e.g.
        "model.layers.0.self_attn.q_proj"). A listed name matches whole dotted components, so
        "model.layers.1.mlp.gate" (a router) never matches "model.layers.1.mlp.gate_proj"."""
        parts = module.split(".")
        # every run of whole components, looked up in a set: the MoE layers ask for 384 names each
        runs = {".".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}
        return runs.isdisjoint(self._skipped)

    def scale_shape(self, rows: int, cols: int) -> tuple[int, int]:
        """The weight_scale_inv shape of a [rows, cols] weight."""
        return -(-rows // self.block_n), -(-cols // self.block_k)


def fp8_config(config: ModelConfig) -> Fp8Config | None:
    """The checkpoint's FP8 config, None when it is not quantized (ConfigError for another quantization)."""
    q = config.quantization_config
    return None if not q else Fp8Config.from_dict(q)


def kernels_run_fp8(kernels: Any, device: torch.device | str) -> bool:
    """Whether this kernel set on this device runs block-FP8 GEMMs: a set with FP8 kernels (the Triton one) and,
    on CUDA, FP8 tensor cores (compute capability 8.9: Ada, Hopper and later). On the CPU only the Triton set
    under TRITON_INTERPRET=1 (the tests) has them."""
    if getattr(kernels, "fp8_linear", None) is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return device.type == "cpu"


@dataclass(frozen=True, slots=True)
class Fp8Plan:
    """One model's FP8 choices: the checkpoint's config, and whether converted projections stay in FP8."""

    config: Fp8Config
    keep_fp8: bool

    @classmethod
    def build(cls, config: ModelConfig, kernels: Any, device: torch.device | str) -> Fp8Plan | None:
        fp8 = fp8_config(config)
        if fp8 is None:
            return None
        keep = kernels_run_fp8(kernels, device)
        if not keep:
            logger.info(
                "FP8 checkpoint: weights are dequantized to the model dtype at load (no FP8 GEMMs here)"
            )
        return cls(fp8, keep)

    def converted(self, modules: Sequence[str]) -> bool:
        """Whether the checkpoint stores these modules (the parts of one merged projection) in FP8: all or none."""
        flags = {self.config.converts(m) for m in modules}
        if len(flags) > 1:
            raise ConfigError(
                f"FP8 checkpoint converts only some of {', '.join(modules)}: they are merged into one projection "
                "here, so all or none must be converted"
            )
        return flags.pop()

    def holds_fp8(self, modules: Sequence[str], part_rows: Sequence[int]) -> bool:
        """Whether the merged projection of these checkpoint modules (their row counts in order) keeps FP8
        weights in memory: converted, FP8 GEMMs available, and every part but the last a whole number of scale
        blocks (the merged scale tensor is then the parts' scales stacked)."""
        if not self.converted(modules) or not self.keep_fp8:
            return False
        aligned = all(rows % self.config.block_n == 0 for rows in part_rows[:-1])
        if not aligned:
            logger.warning(
                "FP8: %s not aligned to %d-row blocks: dequantized at load", modules, self.config.block_n
            )
        return aligned


def fp8_projection(holder: nn.Module, rows: int, cols: int, block: Fp8Config, device: Any) -> None:
    """Give ``holder`` an FP8 ``weight`` [rows, cols] and its float32 ``weight_scale_inv`` (what the loader
    fills and ``project`` reads)."""
    holder.weight = nn.Parameter(torch.empty(rows, cols, device=device, dtype=FP8_DTYPE), requires_grad=False)
    scale = torch.empty(block.scale_shape(rows, cols), device=device, dtype=torch.float32)
    holder.weight_scale_inv = nn.Parameter(scale, requires_grad=False)
    holder.fp8_block = (block.block_n, block.block_k)


def fp8_experts(moe: nn.Module, experts: int, hidden: int, inter: int, block: Fp8Config, device: Any) -> None:
    """FP8 expert weights on the MoE block: w13 [E, 2I, H] with w13_scale_inv [E, 2*ceil(I/bn), ceil(H/bk)]
    (the gate's row blocks, then the up's: so I need not be a multiple of the block) and w2 [E, H, I] with
    w2_scale_inv [E, ceil(H/bn), ceil(I/bk)]."""
    gate_blocks, h_blocks = block.scale_shape(inter, hidden)
    moe.w13 = nn.Parameter(
        torch.empty(experts, 2 * inter, hidden, device=device, dtype=FP8_DTYPE), requires_grad=False
    )
    moe.w2 = nn.Parameter(
        torch.empty(experts, hidden, inter, device=device, dtype=FP8_DTYPE), requires_grad=False
    )
    scale13 = torch.empty(experts, 2 * gate_blocks, h_blocks, device=device, dtype=torch.float32)
    scale2 = torch.empty(experts, *block.scale_shape(hidden, inter), device=device, dtype=torch.float32)
    moe.w13_scale_inv = nn.Parameter(scale13, requires_grad=False)
    moe.w2_scale_inv = nn.Parameter(scale2, requires_grad=False)
    moe.fp8_block = (block.block_n, block.block_k)


def project(holder: nn.Module, x: torch.Tensor, kernels: Any) -> torch.Tensor:
    """x @ W^T (+ bias) for one projection: the kernel set's block-FP8 GEMM when it holds FP8 weights, else
    its plain linear."""
    bias = getattr(holder, "bias", None)
    scale = getattr(holder, "weight_scale_inv", None)
    if scale is None:
        return kernels.linear(x, holder.weight, bias)
    return kernels.fp8_linear(x, holder.weight, scale, holder.fp8_block, bias)
