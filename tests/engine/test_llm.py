"""The offline API: ``from qwen3_api import LLM, SamplingParams``."""

from __future__ import annotations

import pytest

from qwen3_api import LLM, SamplingParams
from tests.engine.helpers import assert_no_leaks


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


def test_chat_renders_the_template_and_splits_reasoning(llm, tiny_moe_dir):
    from qwen3_api.chat.template import ChatTemplate
    from qwen3_api.chat.tokens import ChatTokenizer

    tok = ChatTokenizer.from_dir(tiny_moe_dir)
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    greedy = SamplingParams(temperature=0.0, max_tokens=12, n=2)
    off = llm.chat(conv, greedy, chat_template_kwargs={"enable_thinking": False}, use_tqdm=False)
    assert len(off) == 1 and len(off[0].messages) == 2
    prompt = off[0].output.prompt_token_ids
    assert prompt == ChatTemplate(tok).encode(conv, enable_thinking=False)
    assert tok.decode(prompt, skip_special_tokens=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    for msg, sample in zip(off[0].messages, off[0].output.outputs, strict=True):
        assert msg.reasoning is None and msg.reasoning_tokens == 0  # thinking off: everything is the answer
        answer_ids = [t for t in sample.token_ids if t not in tok.special_ids]
        assert (msg.content or "").strip() == tok.decode(answer_ids).strip()
        assert msg.finish_reason == sample.finish_reason

    # thinking on (the default) for a batch of two conversations: results in order, no tag ever in the content
    on = llm.chat([conv, conv[1:]], SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False)
    assert [len(r.messages) for r in on] == [1, 1]
    assert on[0].output.prompt_token_ids != on[1].output.prompt_token_ids  # in order: with and without system
    for result in on:
        msg, ids = result.messages[0], result.output.outputs[0].token_ids
        assert "<think>" not in (msg.content or "") and "</think>" not in (msg.content or "")
        if ids and ids[0] == tok.think_start_id and tok.think_end_id not in ids:
            assert msg.content is None  # cut mid-thought: all of it is reasoning
    assert_no_leaks(llm.engine)
