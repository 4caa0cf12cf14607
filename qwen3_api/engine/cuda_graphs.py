"""CUDA-graph decode: the model's decode step captured once per batch-size bucket and replayed.

A decode step of Qwen3-30B-A3B launches about a thousand small kernels (48 layers of norms, rotary,
attention, router, two MoE GEMMs...). Launched one by one from Python, each costs several microseconds of
host time, so the launches alone would take longer than the ~1.4 ms the weights need to stream from HBM
(an estimate; benchmarks/gpu_decode.py --no-cuda-graphs measures it). A graph replays them with one launch.

A graph replays fixed addresses and fixed shapes, so:
* every input lives in a static buffer sized for the largest bucket; a batch of B sequences runs the graph
  of the smallest bucket >= B, its rows B.. padded: slot -1 (store_kvcache skips it) and context length 0
  (attention returns zeros for it), so padding rows neither read nor write the KV cache;
* nothing in the captured step may depend on host values that change between steps. The Triton kernels
  meet this: the MoE alignment has a static bound, the decode attention's split count depends only on the
  batch size, and context lengths and block tables are read on the device. The torch CPU kernels do not
  (they slice with host lengths), so graphs are used only with the Triton backend.

Wiring into the engine's ModelRunner (CUDA only; the CPU path is untouched). The runner builds each step's
metadata with the one builder (AttentionMetadata.build, via model_runner.prepare_inputs); ``run`` copies it
into the static buffers, which ``_metadata`` views per bucket::

    runner = CudaGraphDecodeRunner(model, kv_caches, max_batch_size=max_num_seqs,
                                   max_blocks_per_seq=cdiv(max_model_len, block_size))
    runner.capture()                       # once, after the KV cache is allocated
    ...
    if runner.can_run(attn):
        hidden = runner.run(input_ids, positions, attn)   # valid until the next run()
    else:
        hidden = model(input_ids, positions, attn, kv_caches)
"""

from __future__ import annotations

import logging

import torch

from qwen3_api.kernels.metadata import AttentionMetadata

logger = logging.getLogger(__name__)

def default_buckets(max_batch_size: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, then every 16 (vLLM-like): padding wastes < 12.5 % above 8."""
    sizes = [1, 2, 4] + list(range(8, 65, 8)) + list(range(80, max(max_batch_size, 1) + 16, 16))
    buckets = sorted({s for s in sizes if s < max_batch_size} | {max_batch_size})
    return buckets


class CudaGraphDecodeRunner:
    """Captures the decode forward per batch bucket over static input buffers; replays with padding.

    With ``use_graphs=False`` the same static-buffer path runs eagerly: this is how the padding logic is
    tested on CPU (under the Triton interpreter) where CUDA graphs do not exist.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        max_batch_size: int,
        max_blocks_per_seq: int,
        buckets: list[int] | None = None,
        use_graphs: bool = True,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.buckets = sorted(buckets or default_buckets(max_batch_size))
        self.max_blocks_per_seq = max_blocks_per_seq
        self.use_graphs = use_graphs
        self.block_size = kv_caches[0][0].shape[1]
        device = kv_caches[0][0].device
        largest = self.buckets[-1]
        self.input_ids = torch.zeros(largest, dtype=torch.long, device=device)
        self.positions = torch.zeros(largest, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((largest,), -1, dtype=torch.int64, device=device)
        self.context_lens = torch.zeros(largest, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(largest, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.cu_seqlens_q = torch.arange(largest + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    @property
    def max_batch_size(self) -> int:
        return self.buckets[-1]

    def _metadata(self, size: int) -> AttentionMetadata:
        """Metadata over the static buffers; its host fields are bounds, never read by the Triton decode."""
        return AttentionMetadata(
            cu_seqlens_q=self.cu_seqlens_q[: size + 1],
            context_lens=self.context_lens[:size],
            slot_mapping=self.slot_mapping[:size],
            block_tables=self.block_tables[:size],
            query_lens_cpu=[1] * size,
            context_lens_cpu=[self.max_blocks_per_seq * self.block_size] * size,
            max_query_len=1,
            max_context_len=self.max_blocks_per_seq * self.block_size,
            is_decode=True,
        )

    def _step(self, size: int) -> torch.Tensor:
        return self.model(self.input_ids[:size], self.positions[:size], self._metadata(size), self.kv_caches)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture one graph per bucket, largest first so the smaller ones share its memory pool."""
        if not self.use_graphs:
            return
        self._reset_padding(0)
        pool = None
        for size in reversed(self.buckets):
            # The eager run first compiles the Triton kernels and settles the allocator outside the capture.
            self._step(size)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self._step(size)
            pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize()
        logger.info("captured CUDA graphs for decode batch sizes %s", self.buckets)

    def can_run(self, attn: AttentionMetadata) -> bool:
        """Whether this step is a decode step that fits a bucket and the static block-table width."""
        return (
            attn.is_decode
            and 0 < attn.num_seqs <= self.max_batch_size
            and attn.block_tables.shape[1] <= self.max_blocks_per_seq
        )

    def bucket_for(self, num_seqs: int) -> int:
        """The smallest captured batch size that holds num_seqs."""
        for size in self.buckets:
            if size >= num_seqs:
                return size
        raise ValueError(f"batch of {num_seqs} exceeds the largest bucket {self.max_batch_size}")

    def _reset_padding(self, start: int) -> None:
        self.input_ids[start:].zero_()
        self.positions[start:].zero_()
        self.slot_mapping[start:].fill_(-1)
        self.context_lens[start:].zero_()

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttentionMetadata) -> torch.Tensor:
        """Hidden states [B, hidden] of one decode step; a view into a static buffer, valid until the next run."""
        num_seqs = attn.num_seqs
        size = self.bucket_for(num_seqs)
        self.input_ids[:num_seqs].copy_(input_ids, non_blocking=True)
        self.positions[:num_seqs].copy_(positions, non_blocking=True)
        self.slot_mapping[:num_seqs].copy_(attn.slot_mapping, non_blocking=True)
        self.context_lens[:num_seqs].copy_(attn.context_lens, non_blocking=True)
        width = attn.block_tables.shape[1]
        # Columns past `width` keep stale ids: harmless, a row never reads past its context length.
        self.block_tables[:num_seqs, :width].copy_(attn.block_tables, non_blocking=True)
        self._reset_padding(num_seqs)
        if self.use_graphs:
            self.graphs[size].replay()
            return self.outputs[size][:num_seqs]
        return self._step(size)[:num_seqs]
