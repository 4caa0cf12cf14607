"""The native CPU decode kernels (kernels/cpu_native.cpp): built where a compiler exists, equal to torch's math,
and used by the torch kernels exactly where they apply (one row, transposed float32 weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwen3_api.kernels import cpu_native, torch_linear
from qwen3_api.kernels.torch_linear import CpuLinear
from tests.model.helpers import native_cpu_ops, transposed_copy


@pytest.fixture(scope="module")
def native():
    return native_cpu_ops()


class _Counting:
    """Wraps torch.ops.qwen3_api_cpu and counts the calls of each op."""

    def __init__(self, ops) -> None:
        self.ops, self.calls = ops, {"linear_t": 0, "moe_decode": 0}

    def __getattr__(self, name):
        def call(*args):
            self.calls[name] += 1
            return getattr(self.ops, name)(*args)

        return call


# wide (lm_head-like, > 8192 outputs: column tiles and leftover vectors), narrow (row blocks per thread),
# outputs and inputs that are not multiples of the vector width, a single output, a single input
SHAPES = [(20_000, 64), (8193, 16), (1024, 512), (512, 256), (33, 17), (7, 5), (1, 40), (40, 1), (300, 300)]


@pytest.mark.parametrize(("out", "inp"), SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_t_equals_f_linear(native, out, inp, threads) -> None:
    gen = torch.Generator().manual_seed(out * 7 + inp)
    weight = transposed_copy(torch.randn(out, inp, generator=gen))
    bias = torch.randn(out, generator=gen)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for x in (torch.randn(1, inp, generator=gen), torch.randn(inp, generator=gen), torch.randn(1, 1, inp)):
            want = F.linear(x, weight, bias)
            got = native.linear_t(x, weight, bias)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(native.linear_t(x, weight, None), F.linear(x, weight), atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(old)


def test_linear_t_rejects_what_it_cannot_read(native) -> None:
    weight = transposed_copy(torch.randn(8, 4))
    with pytest.raises(RuntimeError, match="one row"):
        native.linear_t(torch.randn(2, 4), weight, None)
    with pytest.raises(RuntimeError, match="contiguous"):
        native.linear_t(torch.randn(1, 4), torch.randn(8, 4), None)  # row-major: its transpose is not contiguous
    with pytest.raises(RuntimeError, match="float32"):
        native.linear_t(torch.randn(1, 4), weight.double(), None)


def test_moe_decode_equals_the_expert_math_and_checks_ids(native) -> None:
    gen = torch.Generator().manual_seed(3)
    experts, hidden, inter = 6, 40, 24
    w13 = transposed_copy(torch.randn(experts, 2 * inter, hidden, generator=gen) / 5)
    w2 = transposed_copy(torch.randn(experts, hidden, inter, generator=gen) / 4)
    x = torch.randn(2, hidden, generator=gen)
    ids = torch.tensor([[4, 0, 5], [1, 1, 3]])  # an expert twice: both pairs count
    weights = torch.rand(2, 3, generator=gen)
    want = torch.zeros(2, hidden)
    for t in range(2):
        for k in range(3):
            gate_up = w13[ids[t, k]] @ x[t]
            want[t] += weights[t, k] * (w2[ids[t, k]] @ (F.silu(gate_up[:inter]) * gate_up[inter:]))
    got = native.moe_decode(x, w13.transpose(1, 2), w2.transpose(1, 2), ids, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="out of range"):
        native.moe_decode(x, w13.transpose(1, 2), w2.transpose(1, 2), torch.tensor([[6, 0, 1], [0, 1, 2]]), weights)


@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("transposed", [False, True])
def test_torch_linear_routes_one_row_over_transposed_weights_to_native(native, rows, transposed, monkeypatch):
    counting = _Counting(native)
    monkeypatch.setattr(cpu_native, "ops", lambda: counting)
    weight = torch.randn(48, 40)
    weight = transposed_copy(weight) if transposed else weight
    x = torch.randn(rows, 40)
    torch.testing.assert_close(torch_linear.linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)
    assert counting.calls["linear_t"] == (rows == 1 and transposed)
    torch_linear.linear(x.double(), weight.double())  # float64 is never native
    assert counting.calls["linear_t"] == (rows == 1 and transposed)


def test_the_model_layout_reaches_the_native_kernels(native) -> None:
    """Weights allocated by the model (layers.weight_param) are what the native path accepts."""
    from qwen3_api.model.layers import weight_param

    w = weight_param(64, 32, device="cpu", dtype=torch.float32)
    experts = weight_param(4, 64, 32, device="cpu", dtype=torch.float32)
    assert torch_linear.is_transposed(w) and torch_linear.is_transposed(experts)
    assert not torch_linear.is_transposed(torch.empty(64, 32))
    assert not torch_linear.is_transposed(torch.empty(4, 64, 32))


def test_off_switch_falls_back_to_torch(monkeypatch) -> None:
    monkeypatch.setenv("QWEN3_API_CPU_NATIVE", "off")
    cpu_native.ops.cache_clear()
    try:
        assert cpu_native.ops() is None
        weight = transposed_copy(torch.randn(48, 40))
        x = torch.randn(1, 40)
        torch.testing.assert_close(torch_linear.linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)
    finally:
        cpu_native.ops.cache_clear()


def test_wide_linears_go_native_only_where_tuning_found_it_faster(native, monkeypatch) -> None:
    counting = _Counting(native)
    monkeypatch.setattr(cpu_native, "ops", lambda: counting)
    wide = transposed_copy(torch.randn(torch_linear.NATIVE_NARROW_MAX + 16, 32))
    narrow = transposed_copy(torch.randn(torch_linear.NATIVE_NARROW_MAX, 32))
    x = torch.randn(1, 32)
    for choice in (False, True):
        linear = CpuLinear(native_wide=choice)  # one model's linear, tuned to `choice`
        counting.calls["linear_t"] = 0
        torch.testing.assert_close(linear(x, wide), F.linear(x, wide), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(linear(x, narrow), F.linear(x, narrow), atol=1e-4, rtol=1e-4)
        assert counting.calls["linear_t"] == 1 + choice  # the narrow one always, the wide one when tuned so
    # tuning times both kernels (5 timed calls each after a warm-up) and records its choice
    linear = CpuLinear(native_wide=None)
    counting.calls["linear_t"] = 0
    choice = linear.tune(wide)
    assert isinstance(choice, bool) and linear.native_wide is choice
    assert counting.calls["linear_t"] == 6
    # a weight the native kernel cannot read leaves the choice alone
    assert linear.tune(torch.randn(100, 32)) is choice
    assert CpuLinear().native_wide is None  # per model: a fresh one is untuned


def test_the_runner_warm_up_tunes_the_untied_lm_head_once(native, tmp_path, monkeypatch) -> None:
    from qwen3_api.demo.tiny import make_tiny_model
    from qwen3_api.engine.model_runner import ModelRunner
    from qwen3_api.model.loader import load_model

    tuned: list[tuple[int, ...]] = []

    def fake_tune(self, weight):
        tuned.append(tuple(weight.shape))
        self.native_wide = False
        return False

    monkeypatch.setattr(torch_linear, "NATIVE_NARROW_MAX", 16)  # the tiny vocabulary counts as wide
    monkeypatch.setattr(CpuLinear, "tune", fake_tune)
    make_tiny_model(tmp_path / "m", tie_word_embeddings=False)
    model, config = load_model(tmp_path / "m", dtype=torch.float32)
    for _ in range(2):  # before serving, once per model however many runners share it
        ModelRunner(model, config, num_blocks=4, block_size=16, device=torch.device("cpu"), dtype=torch.float32)
    assert tuned == [tuple(model.lm_head.weight.shape)]


def _paged_history(lens: list[int], kv_heads: int, head_dim: int, block_size: int, seed: int):
    """Random K/V caches with each sequence's blocks scattered (shuffled ids) and its block table."""
    gen = torch.Generator().manual_seed(seed)
    per_seq = [-(-n // block_size) for n in lens]
    num_blocks = sum(per_seq) + 3
    k = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen)
    v = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen)
    ids = torch.randperm(num_blocks, generator=gen).tolist()
    table = torch.zeros(len(lens), max(per_seq), dtype=torch.int32)
    for b, count in enumerate(per_seq):
        table[b, :count] = torch.tensor([ids.pop() for _ in range(count)], dtype=torch.int32)
    return k, v, table, torch.tensor(lens, dtype=torch.int32)


# MHA and GQA (8 query heads per KV head, as Qwen3-30B-A3B), a head size that is no multiple of the vector width,
# a one-token history, one sequence and a batch of unequal ones
@pytest.mark.parametrize(("lens", "heads", "kv_heads", "head_dim"),
                         [([1, 37, 300], 4, 4, 64), ([129], 32, 4, 128), ([5, 16, 17, 90], 6, 2, 24)])
@pytest.mark.parametrize("threads", [1, 2])
def test_paged_decode_reads_the_history_in_place(native, lens, heads, kv_heads, head_dim, threads) -> None:
    """paged_decode equals the torch path that gathers each history and runs SDPA; attention dispatches to it."""
    from qwen3_api.kernels import torch_attention

    k, v, table, context = _paged_history(lens, kv_heads, head_dim, block_size=16, seed=len(lens))
    q = torch.randn(len(lens), heads, head_dim, generator=torch.Generator().manual_seed(1))
    want = torch_attention._gathered_decode_attention(q, k, v, table, context, lens, head_dim**-0.5)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = native.paged_decode(q, k, v, table, context, head_dim**-0.5)
        dispatched = torch_attention._decode_attention(q, k, v, table, context, lens, head_dim**-0.5)
    finally:
        torch.set_num_threads(before)
    assert (got - want).abs().max().item() <= 1e-5
    assert torch.equal(dispatched, got)


def test_paged_decode_refuses_a_table_outside_the_cache(native) -> None:
    k, v, table, context = _paged_history([20], 2, 16, block_size=16, seed=3)
    q = torch.randn(1, 2, 16)
    with pytest.raises(RuntimeError, match="block id out of range"):
        native.paged_decode(q, k, v, table + k.shape[0], context, 0.25)
    with pytest.raises(RuntimeError, match="context length"):
        native.paged_decode(q, k, v, table, context + 1000, 0.25)


# a decode row, q / k heads viewed out of a fused qkv row (non-contiguous), a prefill batch, a size that is no
# multiple of the vector width
@pytest.mark.parametrize(("rows", "heads", "head_dim"), [(1, 8, 64), (5, 32, 128), (300, 4, 24)])
def test_rms_norm_and_rotary_are_the_torch_math(native, rows, heads, head_dim) -> None:
    from qwen3_api.kernels import torch_pointwise

    gen = torch.Generator().manual_seed(heads)
    fused = torch.randn(rows, (heads + 2) * head_dim, generator=gen)
    x = fused[:, : heads * head_dim].view(rows, heads, head_dim)
    weight = torch.randn(head_dim, generator=gen)
    cos, sin = torch.randn(rows, head_dim, generator=gen), torch.randn(rows, head_dim, generator=gen)
    want_norm = torch_pointwise.torch_rms_norm(x, weight, 1e-6)
    want_rot = torch_pointwise.torch_rotary(x, cos, sin)
    torch.testing.assert_close(native.rms_norm(x, weight, 1e-6), want_norm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(native.rotary(x, cos, sin), want_rot, atol=1e-5, rtol=1e-5)
    # the kernel set's entry points take them on the CPU in float32, and torch's math elsewhere (bf16 here)
    assert torch.equal(torch_pointwise.rms_norm(x, weight, 1e-6), native.rms_norm(x, weight, 1e-6))
    assert torch.equal(torch_pointwise.rotary(x, cos, sin), native.rotary(x, cos, sin))
    xb, wb = x.bfloat16(), weight.bfloat16()
    assert torch.equal(torch_pointwise.rms_norm(xb, wb, 1e-6), torch_pointwise.torch_rms_norm(xb, wb, 1e-6))


def test_rms_norm_and_rotary_refuse_bad_shapes(native) -> None:
    with pytest.raises(RuntimeError, match="weight must be"):
        native.rms_norm(torch.randn(2, 8), torch.randn(7), 1e-6)
    with pytest.raises(RuntimeError, match="cos and sin"):
        native.rotary(torch.randn(2, 1, 8), torch.randn(3, 8), torch.randn(3, 8))
