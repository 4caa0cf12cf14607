"""The offline API: ``from qwen3_api import LLM, SamplingParams``."""

from __future__ import annotations

import pytest
from engine_testutil import assert_no_leaks

from qwen3_api import LLM, SamplingParams


@pytest.fixture(scope="module")
def llm(tiny_moe_dir):
    return LLM(tiny_moe_dir, dtype="float32", kv_cache_memory=0.001, max_model_len=1024, device="cpu")


def test_prompt_forms_and_order(llm, hf_greedy):
    tok = llm.tokenizer
    text = "Hello, world! The engine batches requests."
    ids = tok.encode(text, add_special_tokens=False).ids
    greedy = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    outs = llm.generate([text, ids, {"prompt_token_ids": ids[:5]}], greedy, use_tqdm=True)
    assert [o.prompt_token_ids for o in outs] == [ids, ids, ids[:5]]
    assert outs[0].outputs[0].token_ids == outs[1].outputs[0].token_ids == hf_greedy(ids, 5)
    assert outs[2].outputs[0].token_ids == hf_greedy(ids[:5], 5)
    for out in outs:
        sample = out.outputs[0]
        assert out.finished and sample.finish_reason == "length"
        assert sample.text == tok.decode(sample.token_ids, skip_special_tokens=True)
    assert outs[1].num_cached_tokens == (len(ids) - 1) // 16 * 16  # the second copy hit the prefix cache
    assert_no_leaks(llm.engine)


def test_one_params_per_prompt_and_logprobs(llm):
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    params = [SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True, logprobs=2),
              SamplingParams(temperature=0.9, max_tokens=7, ignore_eos=True, n=2, seed=5)]
    outs = llm.generate(prompts, params, use_tqdm=False)
    assert len(outs[0].outputs[0].token_ids) == 3 and len(outs[0].outputs[0].logprobs) == 3
    assert all(tid in lp for tid, lp in zip(outs[0].outputs[0].token_ids, outs[0].outputs[0].logprobs, strict=True))
    assert [len(s.token_ids) for s in outs[1].outputs] == [7, 7]
    assert outs[1].outputs[1].logprobs is None
    # a single prompt given as a list of ids, and the same seed again: the same tokens
    again = llm.generate([7, 8, 9], params[1], use_tqdm=False)
    assert [s.token_ids for s in again[0].outputs] == [s.token_ids for s in outs[1].outputs]
    assert_no_leaks(llm.engine)


def test_bad_input_is_a_clear_error(llm):
    with pytest.raises(ValueError, match="one each"):
        llm.generate(["a", "b"], [SamplingParams()], use_tqdm=False)
    with pytest.raises(ValueError, match="prompt_token_ids"):
        llm.generate([{"text": "x"}], use_tqdm=False)
    with pytest.raises(ValueError, match="context"):
        llm.generate([[1] * 2000], use_tqdm=False)
    assert_no_leaks(llm.engine)
