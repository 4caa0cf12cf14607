"""Paged KV blocks: allocation with reference counts, prefix caching by chained hashes, LRU reuse."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from qwen3_api.engine.sequence import Sequence


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full and committed to the prefix cache
    token_ids: tuple[int, ...] = field(default_factory=tuple)


def chain_hash(prev_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """Hash of a full block given the hash of the block before it: equal hashes mean equal prefixes
    (up to collisions, which the manager rules out by comparing the stored tokens)."""
    return hash((prev_hash, token_ids))


class BlockManager:
    """Owns the block ids of the KV cache; sequences hold them through ``seq.block_table``.

    A block with ref_count 0 sits in ``free`` (oldest first). If it carries a hash it is still a valid
    prefix-cache entry and can be revived by a later request until it is handed out for new tokens; fresh
    allocations take the least recently freed block first.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks}x{block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_block: dict[int, int] = {}
        self.num_queried_tokens = 0
        self.num_hit_tokens = 0

    # -- accounting ---------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences."""
        return 1.0 - len(self.free) / self.num_blocks

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else 0.0

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """How many more blocks ``seq`` needs to hold its computed tokens plus ``num_new_tokens``."""
        total = seq.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq, num_new_tokens) <= len(self.free)

    # -- allocation ---------------------------------------------------------------------------------------
    def _take_free_block(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:
            # evict the cached content: its memory is needed now
            if self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]
            block.hash = None
            block.token_ids = ()
        block.ref_count = 1
        return block_id

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Grow ``seq.block_table`` to cover ``num_new_tokens`` more tokens; False (nothing taken) if short."""
        needed = self.blocks_needed(seq, num_new_tokens)
        if needed > len(self.free):
            return False
        for _ in range(needed):
            seq.block_table.append(self._take_free_block())
        return True

    def allocate_cached_prefix(self, seq: Sequence) -> int:
        """Attach the longest cached prefix of ``seq`` (a sequence holding no blocks) and return its length
        in tokens. The last token is never taken from the cache: its logits must be computed."""
        assert not seq.block_table, "prefix lookup is for sequences without blocks"
        if not self.enable_prefix_caching:
            return 0
        bs = self.block_size
        prev: int | None = None
        tokens = seq.token_ids
        for i in range((len(tokens) - 1) // bs):
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            h = chain_hash(prev, chunk)
            block_id = self.hash_to_block.get(h)
            if block_id is None:
                break
            block = self.blocks[block_id]
            if block.token_ids != chunk:  # a hash collision: not our prefix
                break
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(h)
            prev = h
        cached = len(seq.block_table) * bs
        seq.num_computed_tokens = cached
        return cached

    def record_prefix_lookup(self, num_tokens: int, num_cached: int) -> None:
        """Count one admitted sequence in the prefix-cache hit rate."""
        self.num_queried_tokens += num_tokens
        self.num_hit_tokens += num_cached

    def share_prefix(self, parent: Sequence, child: Sequence) -> None:
        """Let ``child`` (same prompt, no blocks) reuse the parent's full prompt blocks (n > 1)."""
        assert not child.block_table
        num_full = min(parent.num_prompt_tokens - 1, parent.num_computed_tokens) // self.block_size
        for block_id in parent.block_table[:num_full]:
            self.blocks[block_id].ref_count += 1
            child.block_table.append(block_id)
        child.block_hashes = parent.block_hashes[:num_full]
        child.num_computed_tokens = num_full * self.block_size

    def commit(self, seq: Sequence, num_tokens: int) -> None:
        """Publish the full blocks among the first ``num_tokens`` tokens of ``seq`` to the prefix cache.

        Called by the scheduler once it is sure these tokens are computed this step (the step's K/V are
        stored before any attention reads them, so a request admitted later in the same step may reuse them).
        """
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        tokens = seq.token_ids
        hashes = seq.block_hashes
        for i in range(len(hashes), num_tokens // bs):
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            h = chain_hash(hashes[-1] if hashes else None, chunk)
            hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if block.hash is not None:
                continue  # already published (shared through the cache or a fork)
            if h in self.hash_to_block:
                continue  # another sequence computed the same block concurrently; keep the first one
            block.hash = h
            block.token_ids = chunk
            self.hash_to_block[h] = block.block_id

    def free_sequence(self, seq: Sequence) -> None:
        """Drop every block reference of ``seq`` (finish, abort or preemption)."""
        # tail first: the blocks most specific to this sequence are evicted before the shared prefix
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            if block.ref_count <= 0:
                raise RuntimeError(f"double free of KV block {block_id}")
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash is None:
                    self.free.move_to_end(block_id, last=False)  # nothing worth keeping: reuse first
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        """Forget every cached block (after an engine error the cache content can't be trusted)."""
        for block_id in self.free:
            block = self.blocks[block_id]
            block.hash = None
            block.token_ids = ()
        self.hash_to_block = {b.hash: b.block_id for b in self.blocks if b.hash is not None}

    def check_invariants(self, live: list[Sequence]) -> None:
        """Raise if a block is leaked, double-owned or mis-counted (tests and debugging)."""
        counts = [0] * self.num_blocks
        for seq in live:
            for block_id in seq.block_table:
                counts[block_id] += 1
        for block in self.blocks:
            if block.ref_count != counts[block.block_id]:
                raise AssertionError(
                    f"block {block.block_id}: ref_count {block.ref_count} but {counts[block.block_id]} owners"
                )
            if (block.ref_count == 0) != (block.block_id in self.free):
                raise AssertionError(f"block {block.block_id}: free list disagrees with ref_count")
        for h, block_id in self.hash_to_block.items():
            if self.blocks[block_id].hash != h:
                raise AssertionError(f"hash table points block {block_id} at a stale hash")
