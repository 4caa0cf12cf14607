"""The sampler, parameter by parameter, against hand-computed distributions and masks."""

from __future__ import annotations

import math

import pytest
import torch

from qwen3_api.engine.constraint import allocate_bitmask, apply_bitmask, unpack_bitmask
from qwen3_api.engine.draw import _sorted_candidates, filter_mask
from qwen3_api.engine.sampler import Sampler
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.sequence import Sequence

EOS = 7
BASE = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 0.2])  # 8 real tokens
DRAWS = 20_000


def seqs_for(params: SamplingParams, rows: int, prompt: list[int] | None = None) -> list[Sequence]:
    return [Sequence(str(i), prompt or [0], params) for i in range(rows)]


def frequencies(params: SamplingParams, logits: torch.Tensor = BASE, vocab: int = 8) -> torch.Tensor:
    sampler = Sampler(vocab, [EOS], seed=123)
    tokens = sampler(logits.repeat(DRAWS, 1), seqs_for(params, DRAWS)).token_ids
    return torch.bincount(torch.tensor(tokens), minlength=logits.shape[0]).float() / DRAWS


def assert_close_dist(freq: torch.Tensor, expected: torch.Tensor) -> None:
    # 20k draws: the standard error of a frequency is at most ~0.0035
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)
    assert torch.all(freq[expected == 0] == 0), "a filtered token was sampled"


def test_greedy_is_argmax_and_never_samples_the_vocab_tail():
    logits = torch.cat([BASE, torch.tensor([50.0, 60.0])])  # two padding ids beyond the tokenizer
    sampler = Sampler(8, [EOS])
    out = sampler(logits.repeat(3, 1), seqs_for(SamplingParams(temperature=0.0), 3))
    assert out.token_ids == [0, 0, 0]
    freq = frequencies(SamplingParams(temperature=1.0), logits)
    assert freq[8:].sum() == 0


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_temperature_matches_softmax(temperature):
    assert_close_dist(frequencies(SamplingParams(temperature=temperature)), torch.softmax(BASE / temperature, 0))


def test_top_k():
    expected = torch.zeros(8)
    expected[:3] = torch.softmax(BASE[:3], 0)
    assert_close_dist(frequencies(SamplingParams(top_k=3)), expected)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.softmax(BASE, 0)
    # sorted probs: token 0, 1, 2, 3, 7, ... ; keep tokens until the cumulative mass reaches 0.8
    order = probs.argsort(descending=True)
    cum = probs[order].cumsum(0)
    n_keep = int((cum < 0.8).sum()) + 1
    expected = torch.zeros(8)
    expected[order[:n_keep]] = probs[order[:n_keep]]
    expected /= expected.sum()
    assert 1 < n_keep < 8
    assert_close_dist(frequencies(SamplingParams(top_p=0.8)), expected)


def test_top_k_then_top_p_on_renormalized_top_k():
    probs = torch.softmax(BASE[:4], 0)  # top_k=4 renormalized
    cum = probs.cumsum(0)
    n_keep = int((cum < 0.7).sum()) + 1
    mask = filter_mask(torch.softmax(BASE, 0)[None], [SamplingParams(top_k=4, top_p=0.7)])
    assert mask[0].tolist() == [i < n_keep for i in range(8)]


def test_min_p_mask_is_exact():
    probs = torch.softmax(BASE, 0)
    params = SamplingParams(min_p=0.3)
    mask = filter_mask(probs[None], [params])[0]
    assert mask.tolist() == (probs >= 0.3 * probs.max()).tolist()
    expected = probs * mask
    assert_close_dist(frequencies(params), expected / expected.sum())


def test_top_a_mask_is_exact():
    probs = torch.softmax(BASE, 0)
    mask = filter_mask(probs[None], [SamplingParams(top_a=0.5)])[0]
    assert mask.tolist() == (probs >= 0.5 * probs.max() ** 2).tolist()
    assert 1 < int(mask.sum()) < 8


def test_filters_differ_per_row_in_one_batch():
    probs = torch.softmax(BASE, 0).repeat(3, 1)
    params = [SamplingParams(top_k=2), SamplingParams(), SamplingParams(min_p=0.5)]
    mask = filter_mask(probs, params)
    assert mask[0].sum() == 2 and mask[1].all() and mask[2].tolist() == (probs[2] >= 0.5 * probs[2].max()).tolist()


def test_logit_bias_is_added():
    params = SamplingParams(temperature=0.0, logit_bias={"5": 10.0, 1: -100})
    seqs = seqs_for(params, 2)
    logits = BASE.repeat(2, 1)
    Sampler(8, [EOS]).process_logits(logits, seqs)
    expected = BASE.clone()
    expected[5] += 10.0
    expected[1] -= 100.0
    assert torch.equal(logits[0], expected)
    assert Sampler(8, [EOS])(BASE.repeat(2, 1), seqs).token_ids == [5, 5]


def test_frequency_and_presence_penalties_openai_semantics():
    params = SamplingParams(temperature=0.0, frequency_penalty=0.5, presence_penalty=0.25)
    seq = Sequence("r", [1, 2, 2], params)  # prompt tokens do not count for these two
    for t in [0, 0, 3]:
        seq.append_token(t)
    logits = BASE.clone()[None]
    Sampler(8, [EOS]).process_logits(logits, [seq])
    expected = BASE.clone()
    expected[0] -= 2 * 0.5 + 0.25
    expected[3] -= 1 * 0.5 + 0.25
    assert torch.allclose(logits[0], expected)


def test_repetition_penalty_hf_semantics_over_prompt_and_output():
    params = SamplingParams(temperature=0.0, repetition_penalty=1.5)
    seq = Sequence("r", [1, 5], params)  # token 1 positive, token 5 negative
    seq.append_token(0)
    logits = BASE.clone()[None]
    Sampler(8, [EOS]).process_logits(logits, [seq])
    expected = BASE.clone()
    expected[1] /= 1.5
    expected[5] *= 1.5
    expected[0] /= 1.5
    assert torch.allclose(logits[0], expected)


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    logits = BASE.clone()
    logits[EOS] = 10.0
    logits[4] = 9.0
    params = SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[4])
    seq = Sequence("r", [1], params)
    sampler = Sampler(8, [EOS])
    assert sampler(logits[None].clone(), [seq]).token_ids == [0]
    seq.append_token(0)
    seq.append_token(0)
    assert sampler(logits[None].clone(), [seq]).token_ids == [EOS]
    # ignore_eos lifts the eos mask but the stop id stays masked
    seq2 = Sequence("r", [1], SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[4], ignore_eos=True))
    assert sampler(logits[None].clone(), [seq2]).token_ids == [EOS]


def test_logprobs_are_the_raw_distribution():
    params = SamplingParams(temperature=0.7, top_k=2, logit_bias={6: 100.0}, logprobs=3, seed=1)
    out = Sampler(8, [EOS])(BASE[None].clone(), [Sequence("r", [1], params)])
    raw = torch.log_softmax(BASE, 0)
    chosen = out.token_ids[0]
    assert chosen == 6  # the bias wins the sampling...
    lp = out.logprobs[0]
    assert set(lp) == {6, 0, 1, 2}  # ...and the logprobs still report the unbiased distribution
    for tid, value in lp.items():
        assert math.isclose(value, raw[tid].item(), rel_tol=1e-5)


def test_logprobs_zero_gives_only_the_chosen_token():
    params = SamplingParams(temperature=0.0, logprobs=0)
    out = Sampler(8, [EOS])(BASE[None].clone(), [Sequence("r", [1], params)])
    assert list(out.logprobs[0]) == [0]


class OnlyTokens:
    """A constraint that allows a fixed set of tokens (the TokenConstraint protocol)."""

    def __init__(self, allowed: set[int]) -> None:
        self.allowed = allowed
        self.accepted: list[int] = []

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> bool:
        words = [0] * bitmask.shape[1]
        for t in self.allowed:
            words[t // 32] |= 1 << (t % 32)
        bitmask[row] = torch.tensor(words, dtype=torch.int64).to(torch.int32)
        return True

    def accept_token(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def is_finished(self) -> bool:
        return False


def test_constraint_bitmask_restricts_sampling():
    allowed = {3, 5}
    params = SamplingParams(constraint_factory=lambda: OnlyTokens(allowed))
    seqs = seqs_for(params, 2000)
    tokens = Sampler(8, [EOS])(BASE.repeat(2000, 1), seqs).token_ids
    assert set(tokens) == allowed


def test_apply_bitmask_matches_unpacked_bits():
    gen = torch.Generator().manual_seed(0)
    vocab = 100
    bitmask = allocate_bitmask(3, vocab)
    bitmask[1] = torch.randint(-(2**31), 2**31 - 1, (bitmask.shape[1],), generator=gen, dtype=torch.int32)
    logits = torch.zeros(3, vocab)
    apply_bitmask(logits, bitmask)
    allowed = unpack_bitmask(bitmask, vocab)
    assert allowed[0].all() and allowed[2].all()
    for t in range(vocab):
        word = int(bitmask[1, t // 32]) & 0xFFFFFFFF
        assert bool((word >> (t % 32)) & 1) == bool(allowed[1, t])
        assert (logits[1, t] == 0) == bool(allowed[1, t])


def test_seeded_rows_ignore_the_rest_of_the_batch():
    seeded = SamplingParams(seed=42, temperature=1.0)
    seq = Sequence("a", [1], seeded)
    alone = [Sampler(8, [EOS], seed=0)(BASE[None].clone(), [seq]).token_ids[0] for _ in range(21)]
    others = [Sequence(str(i), [1], SamplingParams(temperature=1.0, top_p=0.9)) for i in range(5)]
    seq2 = Sequence("b", [1], seeded)
    mixed = []
    sampler = Sampler(8, [EOS], seed=99)
    for step in range(21):
        batch = others[: step % 5] + [seq2] + others[step % 5 :]
        out = sampler(BASE.repeat(len(batch), 1), batch).token_ids
        mixed.append(out[batch.index(seq2)])
    assert mixed == alone
    assert len(set(alone)) > 1  # really sampled, not greedy


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"temperature": 2.5}, "temperature"), ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"), ({"top_p": 0.0}, "top_p"), ({"top_k": -1}, "top_k"),
        ({"min_p": 1.2}, "min_p"), ({"top_a": -0.5}, "top_a"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"), ({"presence_penalty": -3}, "presence_penalty"),
        ({"repetition_penalty": 2.1}, "repetition_penalty"), ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"logit_bias": {5: 101}}, "logit_bias"), ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"max_tokens": 0}, "max_tokens"), ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"), ({"logprobs": 21}, "logprobs"),
        ({"n": 0}, "n"), ({"stop_token_ids": [-1]}, "stop_token_ids"), ({"temperature": "hot"}, "temperature"),
    ],
)
def test_out_of_range_values_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamplingParams(**kwargs)


def test_valid_edges_are_accepted():
    SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=1.0, top_a=1.0, frequency_penalty=-2.0,
                   presence_penalty=2.0, repetition_penalty=2.0, logit_bias={1: -100, 2: 100}, logprobs=20)


def reference_keep(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """top_k then top_p by a plain full sort, one row (the slow, obvious way)."""
    order = probs.argsort(descending=True)
    sorted_p = probs[order].clone()
    if top_k:
        sorted_p[top_k:] = 0
    sorted_p /= sorted_p.sum()
    exclusive = sorted_p.cumsum(0) - sorted_p
    keep_sorted = (exclusive < top_p) & (sorted_p > 0) if top_p < 1 else sorted_p > 0
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order] = keep_sorted
    return keep


FAST_ROWS = [SamplingParams(top_p=0.9), SamplingParams(top_k=50, top_p=0.5), SamplingParams(top_k=900),
             SamplingParams(top_p=0.3), SamplingParams(top_k=1000, top_p=0.8), SamplingParams(top_k=7)]
SLOW_ROWS = FAST_ROWS[:2] + [SamplingParams(top_k=2000), SamplingParams(top_k=1500, top_p=0.8)]


@pytest.mark.parametrize(
    "scale, params, fast",
    [(6.0, FAST_ROWS, True), (0.5, FAST_ROWS, False), (6.0, SLOW_ROWS, False)],
)
def test_top_k_top_p_on_a_large_vocabulary_match_a_full_sort(scale, params, fast):
    gen = torch.Generator().manual_seed(3)
    vocab = 5000
    probs = torch.softmax(torch.randn(len(params), vocab, generator=gen) * scale, -1)
    width = _sorted_candidates(probs, [p.top_k or vocab for p in params], [p.top_p for p in params])[0].shape[1]
    assert (width < vocab) == fast  # the candidate shortcut is taken exactly when it is exact
    mask = filter_mask(probs, params)
    for row, p in enumerate(params):
        expected = reference_keep(probs[row], p.top_k, p.top_p)
        assert torch.equal(mask[row], expected), f"row {row}: {p.top_k=} {p.top_p=}"


def test_all_penalties_together_match_a_dense_reference():
    gen = torch.Generator().manual_seed(5)
    vocab = 300
    logits = torch.randn(3, vocab, generator=gen) * 3
    params = [SamplingParams(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=-0.7),
              SamplingParams(), SamplingParams(repetition_penalty=0.8, frequency_penalty=-1.0)]
    prompts = [[5, 5, 9, 250, 12], [5, 9], [1, 2, 3]]
    outputs = [[9, 9, 9, 40, 5], [9, 9], [3, 3, 77]]
    seqs = []
    for p, prompt, out in zip(params, prompts, outputs, strict=True):
        seq = Sequence("r", prompt, p)
        for t in out:
            seq.append_token(t)
        seqs.append(seq)
    got = logits.clone()
    Sampler(vocab, [EOS]).process_logits(got, seqs)
    expected = logits.clone()
    for row, (p, prompt, out) in enumerate(zip(params, prompts, outputs, strict=True)):
        for t in set(prompt) | set(out):
            x = expected[row, t]
            expected[row, t] = x / p.repetition_penalty if x > 0 else x * p.repetition_penalty
        for t in set(out):
            expected[row, t] -= out.count(t) * p.frequency_penalty + p.presence_penalty
    assert torch.allclose(got, expected, atol=1e-6)


def test_top_k_with_min_p_and_top_a_sampled_among_candidates():
    probs = torch.softmax(BASE, 0)
    params = SamplingParams(top_k=5, min_p=0.2, top_a=0.2)
    keep = torch.zeros(8, dtype=torch.bool)
    keep[probs.argsort(descending=True)[:5]] = True
    keep &= (probs >= 0.2 * probs.max()) & (probs >= 0.2 * probs.max() ** 2)
    assert torch.equal(filter_mask(probs[None], [params])[0], keep)
    expected = probs * keep
    assert_close_dist(frequencies(params), expected / expected.sum())


def test_row_argmax_matches_torch_on_ties_nans_and_slices() -> None:
    """argmax_rows (numpy's vectorized argmax on the CPU) answers as torch.argmax: the first maximum, a NaN wins."""
    from qwen3_api.engine.sampler import argmax_rows

    x = torch.randn(5, 151_936, generator=torch.Generator().manual_seed(0))
    x[1] = 0.0  # all tied: index 0
    x[2, 7] = x[2, 9] = x[2].max() + 1  # a tie between two maxima: the first
    x[3, 11] = float("nan")
    x[4, -1] = 1e9  # beyond the slice below
    for view in (x, x[:, :151_669], x[::2]):
        assert torch.equal(argmax_rows(view), view.argmax(dim=-1))
    assert argmax_rows(x)[1:4].tolist() == [0, 7, 11]
