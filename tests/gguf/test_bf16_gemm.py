"""The bf16 GEMM path for large quantized products (quant_gemm_bf16.h) against the gguf package's dequantization.

Where this CPU multiplies bf16 natively and passed the check quant_native.py runs in a child process, products
of many activation rows (prefill, experts with many tokens) dequantize the weights' rows into bf16 and multiply
them on oneDNN's micro-kernels: the reference is the same product over bf16-rounded activations and weights in
float32. Where it cannot, turning the path on is refused and every product runs the int8 kernels.
"""

from __future__ import annotations

import pytest
import torch

from qwen3_api.kernels.quant_linear import QuantExperts, QuantLinear, QuantTensor, fused_moe
from qwen3_api.kernels.quant_native import (
    BF16_MIN_ROWS_AMX,
    BF16_MIN_ROWS_AVX512,
    bf16_gemm,
    bf16_min_rows,
    bf16_ready,
    bf16_supported,
    ops,
)
from qwen3_api.kernels.quant_types import SUPPORTED_TYPES
from tests.gguf.helpers import FLOATS, cols_for, expert_stack, moe_reference, weight

QUANTIZED = sorted(set(SUPPORTED_TYPES) - FLOATS)


def bf(t: torch.Tensor) -> torch.Tensor:
    return t.bfloat16().float()


def test_the_path_is_on_where_the_cpu_passed_its_check() -> None:
    """ops() turns it on exactly where the child's check passed (this machine's flags decide which branch)."""
    assert ops().bf16_gemm_enabled() == bf16_ready()
    assert bf16_ready() == (ops().bf16_gemm_built() and bf16_supported())
    with bf16_gemm(False) as on:
        assert not on and not ops().bf16_gemm_enabled()
    assert ops().bf16_gemm_enabled() == bf16_ready()  # restored


@pytest.mark.parametrize("name", QUANTIZED)
@pytest.mark.parametrize("tokens", [16, 45])
def test_linear_in_bf16_matches_the_rounded_product(name: str, tokens: int) -> None:
    cols = 512 if cols_for(name) == 512 else 96  # 96: strips shorter than 256 values (32-value blocks)
    w, ref = weight(name, 130, cols, seed=7)  # 130 rows: two full 64-row jobs and a tail
    x = torch.randn(tokens, cols, generator=torch.Generator().manual_seed(8))
    with bf16_gemm(False):
        int8 = QuantLinear()(x, w)
    with bf16_gemm(True, min_rows=16) as on:
        got = QuantLinear()(x, w)
    exact = x @ ref.T
    if not on:
        assert torch.equal(got, int8)
        return
    want = bf(x) @ bf(ref).T
    assert (got - want).abs().max().item() <= 2e-5 * want.abs().max().item()
    # and closer to the float product than int8 activations get
    assert (got - exact).norm() < (int8 - exact).norm()


def test_below_the_threshold_the_int8_kernels_answer() -> None:
    w, _ = weight("Q4_K", 64, 512, seed=9)
    x = torch.randn(bf16_min_rows() - 1, 512, generator=torch.Generator().manual_seed(10))
    with bf16_gemm(False):
        int8 = QuantLinear()(x, w)
    with bf16_gemm(True):
        assert torch.equal(QuantLinear()(x, w), int8)


def test_the_threshold_follows_the_cpu_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """AMX tiles make the bf16 GEMM pay from fewer rows than AVX512-BF16 alone; the environment moves it."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    assert bf16_min_rows() == (BF16_MIN_ROWS_AMX if amx is not None and amx() else BF16_MIN_ROWS_AVX512)
    monkeypatch.setenv("QWEN3_API_QUANT_BF16_MIN_ROWS", "24")
    assert bf16_min_rows() == 24
    w, ref = weight("Q4_K", 64, 512, seed=12)
    gen = torch.Generator().manual_seed(13)
    for rows in (23, 24):
        x = torch.randn(rows, 512, generator=gen)
        with bf16_gemm(False):
            int8 = QuantLinear()(x, w)
        with bf16_gemm(True) as on:
            got = QuantLinear()(x, w)
        if rows < 24 or not on:
            assert torch.equal(got, int8)
        else:
            assert (got - x @ ref.T).norm() < (int8 - x @ ref.T).norm()


@pytest.mark.parametrize("gate_type,down_type", [("Q4_K", "Q6_K"), ("Q5_K", "Q8_0"), ("Q4_0", "Q5_0")])
def test_moe_mixes_bf16_and_int8_experts(gate_type: str, down_type: str) -> None:
    """Experts with >= min_rows tokens run in bf16, the others in int8, in the same call."""
    experts, inter, hidden, top_k, tokens = 4, 256, 256, 2, 40
    gen = torch.Generator().manual_seed(11)

    def stack(name: str, rows: int, cols: int) -> tuple[QuantTensor, torch.Tensor]:
        return expert_stack(name, experts, rows, cols, gen)

    (g, gref), (u, uref), (d, dref) = stack(gate_type, inter, hidden), stack(gate_type, inter, hidden), \
        stack(down_type, hidden, inter)
    x = torch.randn(tokens, hidden, generator=gen)
    # experts 0 and 1 take every token (40 each: bf16), 2 and 3 share a few (int8)
    ids = torch.tensor([[0, 1]] * (tokens - 6) + [[2, 3]] * 6)
    topw = torch.rand(tokens, top_k, generator=gen)
    w13, w2 = QuantExperts(g, u), d
    with bf16_gemm(True, min_rows=16) as on:
        got = fused_moe(x, w13, w2, topw, ids)
    big = slice(0, tokens - 6)
    small = slice(tokens - 6, tokens)
    int8_ref = moe_reference(x, ids, topw, gref, uref, dref, act_gate=ops().act_roundtrip(x, g.qtype.id),
                             roundtrip=lambda h: ops().act_roundtrip(h, d.qtype.id))
    assert (got[small] - int8_ref[small]).abs().max().item() <= 2e-5 * int8_ref[small].abs().max().item()
    want = moe_reference(bf(x), ids, topw, bf(gref), bf(uref), bf(dref), roundtrip=bf) if on else int8_ref
    assert (got[big] - want[big]).abs().max().item() <= 2e-5 * want[big].abs().max().item()
