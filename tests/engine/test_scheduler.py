"""Scheduler policies on the block manager alone (no model)."""

from __future__ import annotations

from qwen3_api.engine.block_manager import BlockManager
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.engine.scheduler import ScheduledBatch, Scheduler, SchedulerConfig
from qwen3_api.engine.sequence import Sequence


def advance(batch: ScheduledBatch, new_token: int = 1) -> None:
    """What the engine does after a step: computed tokens move on, finished prefills get a token."""
    for seq, num_tokens in zip(batch.seqs, batch.num_tokens, strict=True):
        seq.num_computed_tokens += num_tokens
        if seq.num_computed_tokens == len(seq):
            seq.append_token(new_token)


def test_a_long_prefill_leaves_room_for_running_decodes():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64), BlockManager(100, 16))
    shorts = [Sequence(f"s{i}", [1, 2, 3], SamplingParams()) for i in range(3)]
    for seq in shorts:
        sched.add(seq)
    advance(sched.schedule())  # the three short prompts are now decoding
    long = Sequence("long", list(range(500)), SamplingParams())
    sched.add(long)
    sched.running.insert(0, sched.waiting.popleft())  # the worst case: the long prompt is the oldest
    long.status = shorts[0].status
    for _ in range(3):
        batch = sched.schedule()
        assert [s.request_id for s in batch.seqs] == ["long", "s0", "s1", "s2"]
        assert batch.num_tokens == [61, 1, 1, 1]
        advance(batch)


def test_chunked_prefill_off_runs_an_over_budget_prompt_alone():
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=32, enable_chunked_prefill=False),
                      BlockManager(100, 16))
    big, small = Sequence("big", list(range(100)), SamplingParams()), Sequence("small", [1, 2], SamplingParams())
    sched.add(big)
    sched.add(small)
    batch = sched.schedule()
    assert [(s.request_id, n) for s, n in zip(batch.seqs, batch.num_tokens, strict=True)] == [("big", 100)]
    advance(batch)
    batch = sched.schedule()
    assert list(zip([s.request_id for s in batch.seqs], batch.num_tokens, strict=True)) == [("big", 1), ("small", 2)]


def test_preemption_takes_the_newest_and_requeues_it_first():
    bm = BlockManager(4, 4)  # 16 tokens in all
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64), bm)
    a, b = Sequence("a", list(range(7)), SamplingParams()), Sequence("b", list(range(7)), SamplingParams())
    sched.add(a)
    sched.add(b)
    advance(sched.schedule())  # a: 2 blocks, b: 2 blocks, cache full
    advance(sched.schedule())  # both decode into their second block (8 tokens each)
    batch = sched.schedule()  # a needs a third block: b, the newest, is preempted
    assert [s.request_id for s in batch.seqs] == ["a"]
    assert sched.num_preemptions == 1 and list(sched.waiting) == [b]
    assert b.block_table == [] and b.num_computed_tokens == 0 and len(b) == 9  # keeps its output
    bm.check_invariants([a])
