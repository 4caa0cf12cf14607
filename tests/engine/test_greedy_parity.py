"""Batched greedy outputs equal transformers' greedy output of each prompt alone (the engine's proof)."""

from __future__ import annotations

import pytest

from qwen3_api.engine.sampling_params import SamplingParams
from tests.engine.helpers import run_to_completion

MAX_NEW = 8


def _check(engine, prompts, hf_greedy, n: int = 1) -> dict:
    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True, n=n)
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, params)
    final = run_to_completion(engine)
    for i, prompt in enumerate(prompts):
        out = final[str(i)]
        assert len(out.outputs) == n
        expected = hf_greedy(prompt, MAX_NEW)
        for sample in out.outputs:
            assert sample.token_ids == expected, f"prompt {i} (len {len(prompt)}) sample {sample.index}"
            assert sample.finish_reason == "length"
    return final


@pytest.mark.parametrize("chunked", [True, False])
def test_batch_matches_transformers(make_engine, prompts16, hf_greedy, chunked):
    engine = make_engine(enable_chunked_prefill=chunked, enable_prefix_caching=False,
                         max_num_batched_tokens=512)
    _check(engine, prompts16, hf_greedy)


def test_prefix_caching_shares_blocks_and_matches(make_engine, prompts16, hf_greedy):
    engine = make_engine(enable_prefix_caching=True, max_num_batched_tokens=512)
    first = _check(engine, prompts16, hf_greedy)
    # prompts 8..15 share two 100-token prefixes: at least the later ones hit the cache
    assert sum(first[str(i)].num_cached_tokens for i in range(8, 16)) > 0
    for i in range(8):
        assert first[str(i)].num_cached_tokens == 0
    # the same prompts again: everything but the last partial block comes from the cache
    engine2_outputs = _check(engine, prompts16, hf_greedy)
    for i, prompt in enumerate(prompts16):
        assert engine2_outputs[str(i)].num_cached_tokens == (len(prompt) - 1) // 16 * 16
    assert engine.stats().prefix_cache_hit_rate > 0.3


def test_preemption_under_a_tiny_cache(make_engine, prompts16, hf_greedy):
    # 40 blocks of 16 = 640 tokens: the longest prompt fits alone, the whole batch does not
    engine = make_engine(num_blocks=40, enable_prefix_caching=False, max_num_batched_tokens=256)
    _check(engine, prompts16, hf_greedy)
    assert engine.scheduler.num_preemptions > 0


def test_preemption_with_prefix_caching(make_engine, prompts16, hf_greedy):
    engine = make_engine(num_blocks=40, enable_prefix_caching=True, max_num_batched_tokens=256)
    _check(engine, prompts16, hf_greedy)
    assert engine.scheduler.num_preemptions > 0


def test_n3_greedy_samples_share_the_prompt(make_engine, prompts16, hf_greedy):
    engine = make_engine(enable_prefix_caching=False, max_num_batched_tokens=512)
    final = _check(engine, prompts16[:6], hf_greedy, n=3)
    assert [o.index for o in final["1"].outputs] == [0, 1, 2]


def test_n3_forks_share_full_prompt_blocks(make_engine):
    engine = make_engine(enable_prefix_caching=False)
    prompt = list(range(1000, 1100))  # 100 tokens: 6 full blocks + 4 tokens
    engine.add_request("r", prompt, SamplingParams(temperature=0.0, max_tokens=3, n=3, ignore_eos=True))
    engine.step()  # prefill of the parent, then the fork
    seqs = engine.requests["r"].seqs
    assert len(seqs) == 3
    parent_blocks = seqs[0].block_table[:6]
    for child in seqs[1:]:
        assert child.block_table == parent_blocks
        assert child.num_computed_tokens == 96
    assert all(engine.block_manager.blocks[b].ref_count == 3 for b in parent_blocks)
    run_to_completion(engine)


def test_prefix_blocks_are_reused_within_the_same_step(make_engine, hf_greedy):
    prefix = list(range(2000, 2064))  # 4 full blocks
    prompts = [prefix + [7, 8, 9], prefix + [10, 11, 12, 13, 14]]
    engine = make_engine(enable_prefix_caching=True, max_num_batched_tokens=512)
    final = _check(engine, prompts, hf_greedy)
    assert engine.scheduler.num_preemptions == 0
    assert (final["0"].num_cached_tokens, final["1"].num_cached_tokens) == (0, 64)
