"""FP8 pieces every Triton kernel of the block-FP8 path shares: rounding to float8_e4m3fn, per-row group scales.

``to_fp8_grid`` rounds float32 values to the nearest float8_e4m3fn value (ties to even, saturating at +-448,
subnormals down to 2**-9) and keeps them in float32, by the add-and-subtract trick: adding 1.5 * 2**(e+20) to a
value of exponent e leaves float32 exactly 3 fraction bits of it, and the hardware's round-to-nearest-even does
the rest. It matches torch's ``.to(torch.float8_e4m3fn)`` bit for bit (tests/kernels/test_fp8_gemm.py checks
every tie), and it is used instead of a plain cast because Triton's interpreter rounds some values wrongly (the
carry of a mantissa that rounds up to the next power of two is lost: 125.9 becomes 64). Casting a value that
is already on the grid is exact everywhere, so the GPU's native conversion then only changes the type.
"""

from __future__ import annotations

import triton
import triton.language as tl

from qwen3_api.kernels.triton_utils import interpreting

FP8_MAX = 448.0


@triton.jit
def to_fp8_grid(x):
    """x (float32) rounded to float8_e4m3fn's grid (RTNE, saturating), still float32."""
    x = tl.minimum(tl.maximum(x, -448.0), 448.0)
    exponent = x.to(tl.int32, bitcast=True) & 0x7F800000
    exponent = tl.maximum(exponent, 121 << 23)  # below 2**-6 the subnormals share one step, 2**-9
    magic = (exponent + (20 << 23)).to(tl.float32, bitcast=True) * 1.5
    return (x + magic) - magic


@triton.jit
def quantize_rows(a):
    """Per-token-group activation quantization of one [M, group] tile (vLLM's per_token_group_quant_fp8):
    scale = max(amax(row), 1e-10) / 448. Returns (a / scale on the FP8 grid as float32, scale [M])."""
    amax = tl.max(tl.abs(a), axis=1)
    scale = tl.maximum(amax, 1e-10) / 448.0
    return to_fp8_grid(a / scale[:, None]), scale


@triton.jit
def fp8_dot(a_grid, b, FP8_DOT: tl.constexpr):
    """a_grid [M, K] (float32 on the FP8 grid) . b [K, N] (float8) in float32: FP8 tensor cores on the GPU; the
    interpreter multiplies the same values in float32 (exact products, so only the summation order differs)."""
    if FP8_DOT:
        return tl.dot(a_grid.to(tl.float8e4nv), b)
    return tl.dot(a_grid, b.to(tl.float32), input_precision="ieee")


def uses_fp8_dot() -> bool:
    """FP8 tensor-core dots when compiled for a GPU; float32 dots of the same values under the interpreter."""
    return not interpreting()
