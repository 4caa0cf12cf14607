"""The CPU linear: F.linear routed to the fastest matmul for the shape, and the weight layout it reads best.

Device-agnostic (on CUDA it is F.linear), but written for the CPU in float32, where the route matters:
oneDNN for batches of rows, the native gemv (cpu_native.cpp) or MKL for the one row of a decode step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import qwen3_api.kernels.cpu_native as cpu_native

logger = logging.getLogger(__name__)

# oneDNN's linear (what torch.compile's CPU backend calls): for float32 batches of 2+ rows it is 1.4-3x faster
# than the MKL sgemm F.linear reaches on AMD EPYC, whose slow non-Intel code path MKL picks there
# (benchmarks/RESULTS.md, "CPU matmul paths"). A single row goes to the native gemv (cpu_native.cpp) over the
# transposed weight layout (transposed_weights), else to MKL, whose gemv is ~2x faster on that layout too.
_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None

# A one-row linear over a transposed float32 weight runs native (cpu_native.cpp) up to this many outputs: the
# projections, where it matches MKL's gemv on a Xeon and, unlike MKL on AMD, splits the row over threads.
# A wider one (lm_head) runs native only where CpuLinear.tune timed it faster than MKL: on the Xeon MKL
# streams the 311 MB lm_head 5-10 % faster (benchmarks/RESULTS.md, "Native CPU decode kernels").
NATIVE_NARROW_MAX = 8192


def is_transposed(w: torch.Tensor) -> bool:
    """Whether a 2-D or 3-D w [..., out, in] is the transpose of a contiguous [..., in, out] tensor. Strides
    only, ~1 us, since this runs ~25 times a decoded token."""
    out, inp = w.shape[-2:]
    if w.ndim == 2:
        return w.stride() == (1, out)
    return w.ndim == 3 and w.stride() == (out * inp, 1, out)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, native_wide: bool = False
) -> torch.Tensor:
    """F.linear, routed to the fastest CPU matmul for the shape; x [..., in], weight [out, in] (any strides).

    ``native_wide``: a one-row linear wider than NATIVE_NARROW_MAX outputs runs native too (CpuLinear.tune).
    """
    if x.dtype == torch.float32 and x.device.type == "cpu":
        if x.numel() > x.shape[-1]:
            if _ONEDNN_LINEAR is not None:
                return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
        elif x.numel() == x.shape[-1] and weight.ndim == 2 and is_transposed(weight):  # one row: a decode step
            native = cpu_native.ops()
            if native is not None and (weight.shape[0] <= NATIVE_NARROW_MAX or native_wide):
                return native.linear_t(x, weight, bias)
    return F.linear(x, weight, bias)


@dataclass(slots=True)
class CpuLinear:
    """One model's linear: :func:`linear` plus the verdict of :meth:`tune` for its wide one-row linears.

    Per model, not per process: two models in one process each keep the verdict timed on their own lm_head.
    """

    native_wide: bool | None = None  # None until tuned: wide one-row linears go to MKL

    def __call__(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return linear(x, weight, bias, native_wide=bool(self.native_wide))

    def warm_up(self, lm_head: torch.Tensor) -> None:
        """Before the first request: build (first run, ~5 s) or load the native kernels where the weights use
        their layout, then time a wide lm_head both ways (once per model; a tied one is row-major: never)."""
        if not transposed_weights(lm_head.device, lm_head.dtype) or cpu_native.ops() is None:
            return
        if lm_head.shape[0] > NATIVE_NARROW_MAX and self.native_wide is None:
            self.tune(lm_head)

    def tune(self, weight: torch.Tensor, repeats: int = 5) -> bool:
        """Time one row through a wide transposed float32 weight (the lm_head) natively and with MKL,
        alternating, and route this model's wide one-row linears to the faster from now on. Returns whether
        that is native."""
        native = cpu_native.ops()
        if native is None or weight.dtype != torch.float32 or weight.ndim != 2 or not is_transposed(weight):
            return bool(self.native_wide)
        x = torch.randn(1, weight.shape[1], dtype=weight.dtype)
        best = {"native": math.inf, "mkl": math.inf}
        runs = {"native": lambda: native.linear_t(x, weight, None), "mkl": lambda: F.linear(x, weight)}
        for round_ in range(repeats + 1):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if round_:  # round 0 warms both up
                    best[name] = min(best[name], time.perf_counter() - start)
        self.native_wide = best["native"] < best["mkl"]
        logger.info("one-row linear [%d x %d]: native %.2f ms, MKL %.2f ms -> %s", weight.shape[0], weight.shape[1],
                    1e3 * best["native"], 1e3 * best["mkl"], "native" if self.native_wide else "MKL")
        return self.native_wide


def transposed_weights(device: torch.device | str | None, dtype: torch.dtype) -> bool:
    """Whether weights [out, in] should be stored as the transpose of a contiguous [in, out] tensor.

    On the CPU in float32, MKL's gemv over that layout (a one-row decode step) runs ~2x faster than over
    row-major weights (311 MB lm_head: 15-18 ms vs 35 ms on one core), and oneDNN takes either layout at the
    same speed. bfloat16 and CUDA show no gain and keep the checkpoint's row-major layout.
    """
    return dtype == torch.float32 and torch.device(device if device is not None else "cpu").type == "cpu"
