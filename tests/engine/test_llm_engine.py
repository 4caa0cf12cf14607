"""The engine's request life cycle on the tiny model: seeds, stops, aborts, limits, stats."""

from __future__ import annotations

import random

import pytest

from qwen3_api.engine.exceptions import PromptTooLongError
from qwen3_api.engine.sampling_params import SamplingParams
from tests.engine.helpers import TOKENIZER_VOCAB, run_to_completion


def _random_prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(TOKENIZER_VOCAB) for _ in range(n)]


def test_seeded_request_alone_equals_inside_a_batch(make_engine):
    rng = random.Random(7)
    prompt = _random_prompt(rng, 40)
    seeded = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=12, ignore_eos=True)
    engine = make_engine()
    engine.add_request("alone", prompt, seeded)
    alone = run_to_completion(engine)["alone"].outputs[0].token_ids

    engine = make_engine(max_num_batched_tokens=128)
    for i in range(8):  # others of various lengths and parameters, some before, some after
        other = SamplingParams(temperature=0.8, top_k=50, max_tokens=rng.randrange(3, 20), ignore_eos=True)
        engine.add_request(f"o{i}", _random_prompt(rng, rng.randrange(5, 120)), other)
        if i == 3:
            engine.add_request("batched", prompt, seeded)
    batched = run_to_completion(engine)["batched"].outputs[0].token_ids
    assert batched == alone
    assert len(set(alone)) > 3  # it really sampled


def test_unseeded_requests_differ(make_engine):
    engine = make_engine()
    params = SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)
    engine.add_request("a", list(range(100, 120)), params)
    engine.add_request("b", list(range(100, 120)), params)
    final = run_to_completion(engine)
    assert final["a"].outputs[0].token_ids != final["b"].outputs[0].token_ids


def test_stop_token_ids_and_eos(make_engine):
    engine = make_engine()
    prompt = list(range(200, 230))
    engine.add_request("free", prompt, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    free = run_to_completion(engine)["free"].outputs[0].token_ids
    stop_at = free[2]
    engine.add_request("stop", prompt, SamplingParams(temperature=0.0, max_tokens=6, stop_token_ids=[stop_at]))
    out = run_to_completion(engine)["stop"].outputs[0]
    assert out.token_ids == free[: free.index(stop_at) + 1]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop_at)
    # the same token as an eos id: "stop" without a stop_reason; ignore_eos runs on
    engine.scheduler.eos_token_ids = {stop_at}
    engine.add_request("eos", prompt, SamplingParams(temperature=0.0, max_tokens=6))
    engine.add_request("ign", prompt, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    final = run_to_completion(engine)
    assert (final["eos"].outputs[0].finish_reason, final["eos"].outputs[0].stop_reason) == ("stop", None)
    assert final["ign"].outputs[0].token_ids == free


def test_max_model_len_stops_with_length(make_engine):
    engine = make_engine(max_model_len=40)
    engine.add_request("r", list(range(30)), SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True))
    out = run_to_completion(engine)["r"].outputs[0]
    assert out.finish_reason == "length"
    assert len(out.token_ids) == 10


def test_too_long_prompts_are_refused_at_admission(make_engine):
    engine = make_engine(max_model_len=64, num_blocks=64)
    with pytest.raises(PromptTooLongError, match="64"):
        engine.add_request("r", list(range(64)), SamplingParams())
    small_cache = make_engine(num_blocks=4)  # 64 tokens of cache
    with pytest.raises(PromptTooLongError, match="KV cache"):
        small_cache.add_request("r", list(range(100)), SamplingParams())
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("e", [], SamplingParams())
    with pytest.raises(ValueError, match="token ids"):
        engine.add_request("v", [10**7], SamplingParams())
    with pytest.raises(ValueError, match="max_num_seqs"):
        engine.add_request("n", [1, 2], SamplingParams(n=65))
    assert isinstance(PromptTooLongError(5, 4, "x"), ValueError)
    assert not engine.requests


def test_abort_frees_blocks_at_once(make_engine):
    engine = make_engine()
    engine.add_request("a", list(range(100)), SamplingParams(max_tokens=50, n=2, ignore_eos=True))
    engine.add_request("b", list(range(50)), SamplingParams(max_tokens=50))
    engine.step()
    engine.step()
    assert engine.block_manager.num_free_blocks < engine.block_manager.num_blocks
    out = engine.abort_request("a")
    assert out.finished and [o.finish_reason for o in out.outputs] == ["abort", "abort"]
    assert engine.abort_request("a") is None
    engine.abort_request("b")
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert engine.stats().running == 0


def test_stream_mode_reports_deltas(make_engine):
    engine = make_engine()
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True, logprobs=2)
    engine.add_request("s", list(range(300, 340)), params, stream=True)
    engine.add_request("full", list(range(300, 340)), params)
    deltas, final = [], None
    while engine.has_unfinished_requests():
        for out in engine.step().outputs:
            if out.request_id == "s":
                deltas.append(out)
            else:
                final = out
    tokens = [t for d in deltas for t in d.outputs[0].token_ids]
    assert tokens == final.outputs[0].token_ids
    assert [d.outputs[0].num_tokens for d in deltas] == [1, 2, 3, 4, 5]
    assert all(len(d.outputs[0].logprobs) == len(d.outputs[0].token_ids) for d in deltas)
    assert deltas[-1].finished and not deltas[0].finished


def test_stats(make_engine):
    engine = make_engine(num_blocks=100, max_num_seqs=2)
    for i in range(4):
        engine.add_request(str(i), list(range(i, i + 20)), SamplingParams(max_tokens=3, ignore_eos=True))
    engine.step()
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.num_blocks) == (2, 2, 100)
    assert stats.kv_usage == pytest.approx(4 / 100)
    run_to_completion(engine)
    assert engine.stats().kv_usage == 0.0


def test_min_tokens_and_logprobs_in_the_engine(make_engine):
    engine = make_engine()
    prompt = list(range(500, 520))
    engine.add_request("a", prompt, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    first = run_to_completion(engine)["a"].outputs[0].token_ids[0]
    engine.scheduler.eos_token_ids = {first}
    engine.sampler.eos_token_ids = [first]
    engine.add_request("m", prompt, SamplingParams(temperature=0.0, max_tokens=4, min_tokens=2, logprobs=5))
    out = run_to_completion(engine)["m"].outputs[0]
    assert out.token_ids[0] != first and len(out.token_ids) >= 2
    assert len(out.logprobs) == len(out.token_ids)
    for token, lp in zip(out.token_ids, out.logprobs, strict=True):
        assert token in lp and 5 <= len(lp) <= 6


class Exploding:
    """A constraint that raises after a few tokens, in fill_bitmask or in accept_token."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.seen = 0

    def fill_bitmask(self, bitmask, row):
        if self.where == "fill" and self.seen >= 2:
            raise RuntimeError("grammar broke")
        return False

    def accept_token(self, token_id):
        self.seen += 1
        if self.where == "accept" and self.seen >= 3:
            raise RuntimeError("grammar broke")

    def is_finished(self):
        return False


@pytest.mark.parametrize("where", ["fill", "accept"])
def test_a_failing_constraint_fails_only_its_request(make_engine, where):
    engine = make_engine()
    engine.add_request("bad", list(range(20)), SamplingParams(max_tokens=20, n=2, ignore_eos=True,
                                                              constraint_factory=lambda: Exploding(where)))
    engine.add_request("good", list(range(30)), SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    finished, failures = {}, []
    while engine.has_unfinished_requests():
        result = engine.step()
        for out in result.outputs:
            finished[out.request_id] = out
        failures += result.failures
    assert [rid for rid, _ in failures] == ["bad"]
    assert "grammar broke" in str(failures[0][1])
    assert "bad" not in finished
    assert len(finished["good"].outputs[0].token_ids) == 8
