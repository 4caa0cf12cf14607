"""Property test: random add / abort / step sequences never leak, double-free or deadlock.

The real LLMEngine (scheduler, block manager, forks, stops, aborts) is driven with a fake model runner that
returns random logits, so thousands of steps take seconds.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.sequence import SequenceStatus

VOCAB = 24  # a small vocabulary: prompts share prefixes often, token 0 is eos


class RandomRunner:
    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def execute(self, batch):
        scheduled = list(zip(batch.seqs, batch.num_tokens, strict=True))
        sample = [s for s, n in scheduled if s.num_computed_tokens + n == len(s)]
        assert sample == batch.sampling_seqs
        for seq, n in scheduled:  # what the model may rely on: the blocks cover every token it computes
            assert len(seq.block_table) * 4 >= seq.num_computed_tokens + n
        if not sample:
            return None
        return torch.randn(len(sample), VOCAB, generator=self.gen)


def check(engine: LLMEngine) -> None:
    live = list(engine.scheduler.running) + list(engine.scheduler.waiting)
    engine.block_manager.check_invariants(live)
    for seq in engine.scheduler.waiting:
        assert not seq.block_table and seq.status is SequenceStatus.WAITING
    seats = sum(1 + s.pending_forks for s in engine.scheduler.running)
    assert seats <= engine.scheduler.config.max_num_seqs


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 60), st.integers(1, 3), st.integers(1, 12), st.integers(0, 3)),
        st.tuples(st.just("abort"), st.integers(0, 50)),
        st.tuples(st.just("step"), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=ops,
    num_blocks=st.integers(16, 40),
    budget=st.integers(4, 64),
    max_seqs=st.integers(3, 8),
    chunked=st.booleans(),
    prefix=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_random_workloads_keep_blocks_consistent(tiny_moe, ops, num_blocks, budget, max_seqs, chunked, prefix, seed):
    drive(tiny_moe, ops, num_blocks, budget, max_seqs, chunked, prefix, seed)


def test_a_heavy_workload_preempts_and_hits_the_prefix_cache(tiny_moe):
    ops = [("add", 50, 3, 12, 0)] * 6 + [("step", 4)] * 5 + [("add", 40, 2, 12, 0), ("abort", 2)] * 3
    engine = drive(tiny_moe, ops, num_blocks=20, budget=16, max_seqs=8, chunked=True, prefix=True, seed=1)
    assert engine.scheduler.num_preemptions > 0
    assert engine.block_manager.num_hit_tokens > 0


def drive(tiny_moe, ops, num_blocks, budget, max_seqs, chunked, prefix, seed) -> LLMEngine:
    model, config = tiny_moe
    args = EngineArgs(model="fake", block_size=4, max_num_batched_tokens=budget, max_num_seqs=max_seqs,
                      enable_chunked_prefill=chunked, enable_prefix_caching=prefix, max_model_len=80)
    engine = LLMEngine(model, config, args, vocab_size=VOCAB, num_blocks=num_blocks)
    engine.runner = RandomRunner(seed)
    engine.scheduler.eos_token_ids = {0}
    prefixes = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4, 3, 2], [3] * 13, []]
    added: list[str] = []
    finished: set[str] = set()
    for op in ops:
        if op[0] == "add":
            _, length, n, max_tokens, which = op
            prompt = (prefixes[which] + [(seed + i * 7) % (VOCAB - 1) + 1 for i in range(length)])[:60]
            rid = f"r{len(added)}"
            n = min(n, max_seqs)
            engine.add_request(rid, prompt, SamplingParams(n=n, max_tokens=max_tokens, temperature=1.0, seed=seed))
            added.append(rid)
        elif op[0] == "abort" and added:
            engine.abort_request(added[op[1] % len(added)])
        else:
            for _ in range(op[1]):
                for out in engine.step().outputs:
                    assert out.finished and out.request_id not in finished
                    finished.add(out.request_id)
        check(engine)
    for _ in range(3000):  # everything left must finish: no deadlock
        if not engine.has_unfinished_requests():
            break
        for out in engine.step().outputs:
            finished.add(out.request_id)
        check(engine)
    assert not engine.has_unfinished_requests()
    engine.block_manager.check_invariants([])
    assert engine.block_manager.num_free_blocks == num_blocks
    return engine
