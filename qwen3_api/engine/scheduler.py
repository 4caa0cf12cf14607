"""Which sequences run in the next step, and what becomes of them after it.

``schedule()`` returns a :class:`ScheduledBatch`: running sequences first (decode or their next prefill
chunk), then waiting ones in arrival order, all under one token budget; preemption by recompute when blocks
run out.
``update(batch, sampler_output)`` takes the step's result: computed tokens move on, each sampling sequence
appends its token, forks its n > 1 siblings, and stops (``check_stop``) or runs on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from qwen3_api.engine.block_manager import BlockManager
from qwen3_api.engine.outputs import FinishReason
from qwen3_api.engine.sampler import SamplerOutput
from qwen3_api.engine.sequence import Sequence, SequenceStatus
from qwen3_api.engine.stop import check_stop


@dataclass(slots=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_chunked_prefill: bool = True


@dataclass(slots=True)
class ScheduledBatch:
    """One step's work in batch order: each sequence, how many of its tokens the step computes, and whether
    that chunk reaches its last token (then the step samples its next token)."""

    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    samples: list[bool] = field(default_factory=list)

    def add(self, seq: Sequence, num_tokens: int) -> None:
        """Schedule ``num_tokens`` more tokens of ``seq`` (its blocks already cover them)."""
        self.seqs.append(seq)
        self.num_tokens.append(num_tokens)
        self.samples.append(seq.num_computed_tokens + num_tokens == len(seq))

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def sampling_seqs(self) -> list[Sequence]:
        """The sequences that sample a token this step, in batch order (the rows of the step's logits)."""
        return [seq for seq, samples in zip(self.seqs, self.samples, strict=True) if samples]


@dataclass(slots=True)
class StepUpdate:
    """What ``Scheduler.update`` did with one step's sampled tokens."""

    appended: list[Sequence] = field(default_factory=list)  # got a token (some of them finished with it)
    forked: list[Sequence] = field(default_factory=list)  # n > 1 samples forked off a finished prefill
    failed: dict[str, Exception] = field(default_factory=dict)  # request id -> why one of its samples failed


class Scheduler:
    """FCFS continuous batching over a :class:`BlockManager`.

    Each step the running sequences are served first, oldest first, each with one decode token or its next
    prompt chunk; when blocks run out the newest running sequence is preempted (blocks freed, recomputed
    later from its prompt and output so far). Waiting sequences are then admitted while budget, seat and
    blocks allow, reusing their longest cached prefix. No sequence is ever dropped.

    ``eos_token_ids`` and ``max_seq_len`` (default: the whole cache) are what ``check_stop`` ends samples on.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        block_manager: BlockManager,
        *,
        eos_token_ids: Iterable[int] = (),
        max_seq_len: int | None = None,
    ) -> None:
        self.config = config
        self.block_manager = block_manager
        self.eos_token_ids = set(eos_token_ids)
        self.max_seq_len = max_seq_len or block_manager.num_blocks * block_manager.block_size
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (it holds no blocks)."""
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    # -- before the step --------------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        """The next step's batch: the running sequences, then the waiting ones that fit."""
        batch = ScheduledBatch()
        budget, preempted = self._schedule_running(batch, self.config.max_num_batched_tokens)
        # preemption can't happen after this point: the step's full blocks are safe to publish
        for seq, num_tokens in zip(batch.seqs, batch.num_tokens, strict=True):
            self.block_manager.commit(seq, seq.num_computed_tokens + num_tokens)
        if not preempted:  # after a preemption the cache is full: admit no one
            self._schedule_waiting(batch, budget)
        return batch

    def _schedule_running(self, batch: ScheduledBatch, budget: int) -> tuple[int, bool]:
        """Running sequences, oldest first; a prefill chunk leaves one token for each decode behind it, so a
        long prompt never stalls the streams already running. Returns (budget left, whether it preempted)."""
        bm = self.block_manager
        decodes_left = sum(1 for s in self.running if s.num_uncomputed_tokens == 1)
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.num_uncomputed_tokens == 1:
                decodes_left -= 1
                num_new = 1
            else:
                num_new = min(seq.num_uncomputed_tokens, max(1, budget - decodes_left))
            while not bm.can_allocate(seq, num_new):
                victim = self.running[-1]  # never one already in the batch: those come before seq
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    return budget, preempted  # seq preempted itself: everything after it is gone too
            bm.allocate(seq, num_new)
            batch.add(seq, num_new)
            budget -= num_new
            i += 1
        return budget, preempted

    def _schedule_waiting(self, batch: ScheduledBatch, budget: int) -> None:
        """Waiting sequences, first come first served, while budget, seats and blocks allow."""
        bm = self.block_manager
        seats = self.config.max_num_seqs - sum(self._seats_needed(s) for s in self.running)
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            if self._seats_needed(seq) > seats:
                break
            bm.allocate_cached_prefix(seq)
            if seq.num_output_tokens == 0:
                seq.num_cached_tokens = seq.num_computed_tokens
            num_new = self._prefill_chunk(seq, budget, alone=not batch.seqs)
            if num_new is None or not bm.allocate(seq, num_new):
                bm.free_sequence(seq)  # wait for a step with room
                break
            self.waiting.popleft()
            bm.record_prefix_lookup(len(seq), seq.num_computed_tokens)
            seq.status = SequenceStatus.RUNNING
            batch.add(seq, num_new)
            budget -= num_new
            seats -= self._seats_needed(seq)
            self.running.append(seq)
            bm.commit(seq, seq.num_computed_tokens + num_new)

    def _prefill_chunk(self, seq: Sequence, budget: int, *, alone: bool) -> int | None:
        """How many of an admitted sequence's tokens run this step; None: not now (whole prompts only)."""
        num_new = seq.num_uncomputed_tokens
        if num_new <= budget:
            return num_new
        if self.config.enable_chunked_prefill:
            return budget
        # alone in the step, a whole prompt may exceed the budget rather than never run
        return num_new if alone else None

    @staticmethod
    def _seats_needed(seq: Sequence) -> int:
        # the samples of an n > 1 request are forked after prefill: reserve their seats at admission
        return 1 + seq.pending_forks

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    # -- after the step ---------------------------------------------------------------------------------
    def update(self, batch: ScheduledBatch, output: SamplerOutput | None) -> StepUpdate:
        """Take the step's result: the batch's tokens are computed; each sampling sequence (the rows of
        ``output``) appends its token, forks the other samples of its request when its prefill is done, and
        stops or runs on. A sample whose constraint raised is left as it is and its request reported in
        ``failed``, as is every other sample of that request after it: the caller ends the request."""
        for seq, num_tokens in zip(batch.seqs, batch.num_tokens, strict=True):
            seq.num_computed_tokens += num_tokens
        result = StepUpdate()
        if output is None:
            return result
        for row, seq in enumerate(batch.sampling_seqs):
            if seq.request_id in result.failed:
                continue
            if row in output.failed_rows:
                result.failed[seq.request_id] = output.failed_rows[row]
                continue
            if seq.pending_forks:
                result.forked.extend(self._fork(seq))
            try:
                self._append(seq, output.token_ids[row], output.logprobs[row])
            except Exception as exc:  # a constraint's accept_token / is_finished raised: its request fails alone
                result.failed[seq.request_id] = exc
                continue
            result.appended.append(seq)
        return result

    def _append(self, seq: Sequence, token: int, logprobs: dict[int, float] | None) -> None:
        seq.append_token(token)
        if seq.output_logprobs is not None:
            seq.output_logprobs.append(logprobs or {})
        if seq.constraint is not None:
            seq.constraint.accept_token(token)
        stop = check_stop(seq, self.eos_token_ids, self.max_seq_len)
        if stop is not None:
            self.finish(seq, *stop)

    def _fork(self, parent: Sequence) -> list[Sequence]:
        """The other samples of an n > 1 request, seated right after their parent: they share its full prompt
        blocks and recompute only the partial last one."""
        children = []
        for i in range(1, parent.pending_forks + 1):
            child = parent.fork(i)
            child.num_cached_tokens = parent.num_cached_tokens
            self.block_manager.share_prefix(parent, child)
            child.status = SequenceStatus.RUNNING
            self.running.append(child)
            children.append(child)
        parent.pending_forks = 0
        return children

    def finish(self, seq: Sequence, reason: FinishReason, stop_reason: int | None = None) -> None:
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
        seq.pending_forks = 0
