"""Which sequences run in the next step: running ones first (decode or their next prefill chunk), then
waiting ones in arrival order, all under one token budget; preemption by recompute when blocks run out."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from qwen3_api.engine.block_manager import BlockManager
from qwen3_api.engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_chunked_prefill: bool = True


class Scheduler:
    """FCFS continuous batching over a :class:`BlockManager`.

    Each step the running sequences are served first, oldest first, each with one decode token or its next
    prompt chunk; when blocks run out the newest running sequence is preempted (blocks freed, recomputed
    later from its prompt and output so far). Waiting sequences are then admitted while budget, seat and
    blocks allow, reusing their longest cached prefix. No sequence is ever dropped.
    """

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (it holds no blocks)."""
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def _seats_needed(self, seq: Sequence) -> int:
        # the samples of an n > 1 request are forked after prefill: reserve their seats at admission
        return 1 + seq.pending_forks

    def schedule(self) -> list[Sequence]:
        """The sequences of the next step, each with ``num_scheduled_tokens`` set (in batch order)."""
        bm = self.block_manager
        budget = self.config.max_num_batched_tokens
        scheduled: list[Sequence] = []
        preempted = False

        # 1. running sequences, oldest first; a prefill chunk leaves one token for each decode behind it,
        #    so a long prompt never stalls the streams already running
        decodes_left = sum(1 for s in self.running if s.num_uncomputed_tokens == 1)
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.num_uncomputed_tokens == 1:
                decodes_left -= 1
                num_new = 1
            else:
                num_new = min(seq.num_uncomputed_tokens, max(1, budget - decodes_left))
            while not bm.can_allocate(seq, num_new):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.allocate(seq, num_new)
                seq.num_scheduled_tokens = num_new
                budget -= num_new
                scheduled.append(seq)
                i += 1
                continue
            break  # seq preempted itself: everything after it is gone too
        # preemption can't happen after this point: the step's full blocks are safe to publish
        for seq in scheduled:
            bm.commit(seq, seq.num_computed_tokens + seq.num_scheduled_tokens)

        # 2. waiting sequences, first come first served (not after a preemption: the cache is full)
        seats = self.config.max_num_seqs - sum(self._seats_needed(s) for s in self.running)
        while self.waiting and budget > 0 and not preempted:
            seq = self.waiting[0]
            if self._seats_needed(seq) > seats:
                break
            bm.allocate_cached_prefix(seq)
            if seq.num_output_tokens == 0:
                seq.num_cached_tokens = seq.num_computed_tokens
            num_new = seq.num_uncomputed_tokens
            if num_new > budget:
                if self.config.enable_chunked_prefill:
                    num_new = budget
                elif scheduled:
                    bm.free_sequence(seq)  # whole prompts only: wait for a step with room
                    break
                # else: alone in the step, a whole prompt may exceed the budget rather than never run
            if not bm.allocate(seq, num_new):
                bm.free_sequence(seq)
                break
            self.waiting.popleft()
            bm.record_prefix_lookup(len(seq), seq.num_computed_tokens)
            seq.status = SequenceStatus.RUNNING
            seq.num_scheduled_tokens = num_new
            budget -= num_new
            seats -= self._seats_needed(seq)
            self.running.append(seq)
            scheduled.append(seq)
            bm.commit(seq, seq.num_computed_tokens + num_new)
        return scheduled

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_scheduled_tokens = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def add_running(self, seq: Sequence) -> None:
        """Seat a forked sample (it already shares its parent's prompt blocks) right after the parent."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def finish(self, seq: Sequence, reason: str, stop_reason: int | None = None) -> None:
        """Mark ``seq`` finished and give its blocks back (cached ones stay in the prefix cache)."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        seq.num_scheduled_tokens = 0
        seq.pending_forks = 0
