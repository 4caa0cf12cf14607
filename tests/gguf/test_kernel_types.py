"""Each GGUF tensor type through our kernels against the ``gguf`` package's own dequantization.

The weights are random but valid ggml blocks (quant_types.random_blocks); the reference is
``gguf.quants.dequantize`` (llama.cpp's Python reader) in float32. The kernels quantize activations per block to
int8 as llama.cpp does (K-quants: 256-value blocks, the 32-value types: 32-value blocks; float weights take float
activations), so a product is compared twice: tightly with the activations the kernel saw (``act_roundtrip``,
which isolates the weight decoding and the integer arithmetic), and loosely with the float activations (the
size of the activation quantization error, which llama.cpp has too).
"""

from __future__ import annotations

from collections.abc import Iterator

import gguf
import pytest
import torch

from qwen3_api.kernels.quant_linear import QuantExperts, QuantGroup, QuantLinear, QuantTensor, fused_moe
from qwen3_api.kernels.quant_native import bf16_gemm, ops
from qwen3_api.kernels.quant_types import SUPPORTED_TYPES
from tests.gguf.helpers import FLOATS, K_QUANTS, cols_for, expert_stack, moe_reference, weight

TYPES = sorted(SUPPORTED_TYPES)

@pytest.fixture(autouse=True)
def int8_kernels() -> Iterator[None]:
    """These tests pin the int8 kernels; the bf16 GEMM path (large products) has its own (test_bf16_gemm.py)."""
    with bf16_gemm(False):
        yield


def test_ids_and_block_sizes_are_ggmls() -> None:
    for name, qtype in SUPPORTED_TYPES.items():
        ggml = gguf.GGMLQuantizationType[name]
        assert qtype.id == int(ggml), name
        assert (qtype.block_values, qtype.block_bytes) == gguf.GGML_QUANT_SIZES[ggml], name


@pytest.mark.parametrize("name", ["Q4_K", "Q8_0"])
def test_activations_quantize_as_llama_cpp(name: str) -> None:
    """Per block (256 values for the K-quants, 32 otherwise): scale amax / 127, values rounded to nearest even."""
    block = 256 if name in K_QUANTS else 32
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 512, generator=gen)
    x[1, :block] = 0.0  # an all-zero block stays zero
    x[2, 0] = 127.0  # scale exactly 1: the next values sit on .5 and round to even (0.5 -> 0, 1.5 -> 2, ...)
    x[2, 1:9] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5])
    got = ops().act_roundtrip(x, SUPPORTED_TYPES[name].id)
    blocks = x.reshape(3, -1, block).double()
    amax = blocks.abs().amax(-1, keepdim=True).float()
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(blocks.float() * inv)  # torch.round: half to even
    want = (q * (amax / 127.0)).reshape(3, 512)
    assert torch.equal(got, want)
    assert got[2, 1:9].tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 126.0, -126.0]


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_and_embed_match_gguf(name: str) -> None:
    cols = cols_for(name)
    w, ref = weight(name, 37, cols, seed=1)
    assert torch.equal(w.dequantize(), ref)  # the same decoding, bit for bit
    ids = torch.tensor([[0, 36, 5], [5, 17, 1]])
    assert torch.equal(QuantLinear.embed(ids, w), ref[ids])


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("tokens", [1, 3, 6, 33])
def test_linear_matches_gguf_dequantized_product(name: str, tokens: int) -> None:
    cols = cols_for(name)
    w, ref = weight(name, 70, cols, seed=2)
    x = torch.randn(tokens, cols, generator=torch.Generator().manual_seed(3))
    got = QuantLinear()(x, w)
    seen = ops().act_roundtrip(x, w.qtype.id)  # the activations as the kernel quantized them
    exact = seen @ ref.T
    scale = exact.abs().max().item()
    assert (got - exact).abs().max().item() <= 2e-5 * scale
    if name in FLOATS:
        assert torch.equal(seen, x)  # float weights take float activations
    else:  # int8 activations per block: about 0.4% of a value's block maximum; the product's error ~1e-2
        assert 0 < (seen - x).abs().max().item() <= x.abs().max().item() / 127
        rel = ((got - x @ ref.T).norm() / (x @ ref.T).norm()).item()
        assert rel < 0.02, rel


def test_group_runs_its_parts_side_by_side() -> None:
    """q / k / v in three types (as Q4_K_M files mix Q4_K and Q6_K): one call, the outputs concatenated."""
    parts = [weight(n, r, 256, seed=i) for i, (n, r) in enumerate((("Q4_K", 48), ("Q6_K", 16), ("Q8_0", 16)))]
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(4))
    got = QuantLinear()(x, QuantGroup(tuple(w for w, _ in parts)))
    want = torch.cat([ops().act_roundtrip(x, w.qtype.id) @ ref.T for w, ref in parts], dim=-1)
    assert got.shape == (5, 80)
    assert (got - want).abs().max().item() <= 2e-5 * want.abs().max().item()


@pytest.mark.parametrize("gate_type,down_type", [("Q4_K", "Q6_K"), ("Q5_K", "Q8_0"), ("Q8_0", "Q5_0"),
                                                 ("Q4_0", "BF16"), ("F16", "F32")])
@pytest.mark.parametrize("tokens", [1, 7])
def test_moe_matches_gguf_dequantized_experts(gate_type: str, down_type: str, tokens: int) -> None:
    experts, inter, hidden, top_k = 6, 256 if down_type in K_QUANTS else 64, 256, 2
    gen = torch.Generator().manual_seed(5)

    def stack(name: str, rows: int, cols: int) -> tuple[QuantTensor, torch.Tensor]:
        return expert_stack(name, experts, rows, cols, gen)

    (g, gref), (u, uref), (d, dref) = stack(gate_type, inter, hidden), stack(gate_type, inter, hidden), \
        stack(down_type, hidden, inter)
    x = torch.randn(tokens, hidden, generator=gen)
    ids = torch.stack([torch.randperm(experts, generator=gen)[:top_k] for _ in range(tokens)])
    topw = torch.softmax(torch.randn(tokens, top_k, generator=gen), dim=-1)
    got = fused_moe(x, QuantExperts(g, u), d, topw, ids)
    exact = moe_reference(x, ids, topw, gref, uref, dref, act_gate=ops().act_roundtrip(x, g.qtype.id),
                          roundtrip=lambda h: ops().act_roundtrip(h, d.qtype.id))
    assert (got - exact).abs().max().item() <= 1e-4 * exact.abs().max().item()
    loose = moe_reference(x, ids, topw, gref, uref, dref)
    assert ((got - loose).norm() / loose.norm()).item() < 0.03
    # one expert's slice of the stack is that expert's matrix
    assert torch.equal(g[3].dequantize(), gref[3])


@pytest.mark.parametrize("name", ["Q4_K", "Q8_0"])
def test_bad_shapes_are_refused(name: str) -> None:
    qtype = SUPPORTED_TYPES[name]
    with pytest.raises(ValueError, match="whole blocks"):
        qtype.row_bytes(qtype.block_values + 1)
    w, _ = weight(name, 4, cols_for(name), seed=6)
    with pytest.raises(RuntimeError, match="last dimension"):
        QuantLinear()(torch.randn(2, cols_for(name) + qtype.block_values), w)
