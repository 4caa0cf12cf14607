"""End to end: our logits on a GGUF against the float32 model ``gguf.quants.dequantize`` makes of the same file.

Float files (F16 / BF16, made by llama.cpp's converter) must agree to float rounding. Quantized ones carry the
error of int8 activations (llama.cpp's approach: benchmarks/RESULTS.md compares the two engines' errors on the
same file), so they are checked twice: against the same reference with its activations rounded per block as our
kernels round them (agreement up to rounding-boundary flips, which attention then spreads a little), and against
the plain float reference (an error of the size that rounding alone gives).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen3_api.kernels.quant_native import bf16_gemm, bf16_ready
from qwen3_api.model.gguf.reference import reference_model
from qwen3_api.model.loader import load_model
from tests.gguf.helpers import (
    DENSE_BF16,
    MOE_Q4_K_M,
    MOE_Q8_0,
    act_quant_reference,
    logprob_errors,
    target_logprobs,
)
from tests.model.helpers import our_prefill_logits, random_seqs

LENS = [9, 24, 31]


def test_float_files_from_the_converter_match_the_reference() -> None:
    for path in (DENSE_BF16,):
        ours, config = load_model(path)
        ref, _ = reference_model(path)
        seqs = random_seqs(LENS, config.vocab_size, seed=0)
        for a, b in zip(our_prefill_logits(ours, seqs), our_prefill_logits(ref, seqs), strict=True):
            assert (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()


QUANTIZED_FILES = ["converter_q8_0", "llama_quantize_q4_k_m", "q4_k_m", "q5_k_m", "q4_0_dense"]


def quantized_file(fixture: str, request: pytest.FixtureRequest) -> Path:
    made_by_llama_cpp = {"converter_q8_0": MOE_Q8_0, "llama_quantize_q4_k_m": MOE_Q4_K_M}
    return made_by_llama_cpp.get(fixture) or request.getfixturevalue(fixture)


@pytest.mark.parametrize("fixture", QUANTIZED_FILES)
def test_quantized_files_compute_the_function_their_weights_define(fixture: str, request: pytest.FixtureRequest) -> None:
    """The int8 kernels (every product of few rows: decode, small batches)."""
    path = quantized_file(fixture, request)
    ours, config = load_model(path)
    seqs = random_seqs(LENS, config.vocab_size, seed=1)
    with bf16_gemm(False):
        got = target_logprobs(ours, seqs)
    rounded = target_logprobs(act_quant_reference(path), seqs)
    exact = target_logprobs(reference_model(path)[0], seqs)
    same_mean, same_max = logprob_errors(got, rounded)
    err_mean, _ = logprob_errors(got, exact)
    rounding_mean, _ = logprob_errors(rounded, exact)
    # most tokens agree with the rounded reference to float precision; flips at a rounding boundary move a few
    diff = torch.cat([(a - b).abs() for a, b in zip(got, rounded, strict=True)])
    assert (diff < 1e-3).float().mean().item() >= 0.5, diff
    # the max allows one flip: float-order differences of ~1e-6 (the kernels' sums against torch's) can tip a
    # near-tied router or a value on an int8 rounding boundary, moving one token's log-probability by ~0.25
    assert same_mean <= 0.3 * rounding_mean and same_max < 0.5
    # the error against the float model is what activation rounding gives, and small
    assert err_mean <= 1.3 * rounding_mean + 1e-4
    assert err_mean < 0.5  # (the converter fixtures: tied std-1 embeddings, logits ~50, a router flip or two)


@pytest.mark.parametrize("fixture", QUANTIZED_FILES)
def test_large_products_in_bf16_are_no_less_accurate(fixture: str, request: pytest.FixtureRequest) -> None:
    """The bf16 GEMM path (prefill, well-filled experts) where this CPU runs it: the function of its own rounding
    (activations and weights to bf16), and an error against the float model no larger than the int8 path's
    (llama.cpp's scheme). Where the CPU cannot, turning it on is refused and the int8 kernels answer."""
    path = quantized_file(fixture, request)
    ours, config = load_model(path)
    seqs = random_seqs(LENS, config.vocab_size, seed=1)
    with bf16_gemm(False):
        int8 = target_logprobs(ours, seqs)
    with bf16_gemm(True, min_rows=1) as on:
        got = target_logprobs(ours, seqs)
    assert on == bf16_ready()
    if not on:
        assert logprob_errors(got, int8) == (0.0, 0.0)
        return
    rounded = target_logprobs(act_quant_reference(path, bf16=True), seqs)
    exact = target_logprobs(reference_model(path)[0], seqs)
    same_mean, same_max = logprob_errors(got, rounded)
    int8_mean, _ = logprob_errors(int8, exact)
    err_mean, _ = logprob_errors(got, exact)
    diff = torch.cat([(a - b).abs() for a, b in zip(got, rounded, strict=True)])
    assert (diff < 1e-3).float().mean().item() >= 0.5, diff
    assert same_mean <= 0.3 * int8_mean and same_max < 0.5  # one flip, as above
    assert err_mean <= int8_mean


def test_decode_steps_match_the_prefill(q4_k_m: Path) -> None:
    """One token at a time through the KV cache gives the logits the whole-prompt pass gives (M=1 kernels)."""
    from qwen3_api.engine.kv_cache import allocate_kv_cache
    from tests.model.helpers import make_contiguous_metadata

    ours, config = load_model(q4_k_m)
    [seq] = random_seqs([12], config.vocab_size, seed=2)
    with bf16_gemm(False):  # the int8 kernels on both sides
        [full] = our_prefill_logits(ours, [seq])
    caches = allocate_kv_cache(config, 2, 8, "cpu", torch.float32)
    steps = []
    for i, tok in enumerate(seq):
        attn = make_contiguous_metadata([1], "cpu", 8, context_lens=[i + 1], max_model_len=16)
        hidden = ours(torch.tensor([tok]), torch.tensor([i]), attn, caches)
        steps.append(ours.compute_logits(hidden)[0])
    assert (torch.stack(steps) - full).abs().max().item() <= 1e-3 * full.abs().max().item()
