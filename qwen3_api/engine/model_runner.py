"""One step's sequences -> flat tensors -> the model's forward -> the logits of the rows that sample.

The runner owns the paged KV cache: for each layer a (k_cache, v_cache) pair of
[num_blocks, block_size, num_kv_heads, head_dim] tensors in the model dtype.
"""

from __future__ import annotations

import logging

import torch

from qwen3_api.engine.args import kv_cache_budget_bytes
from qwen3_api.engine.sequence import Sequence
from qwen3_api.kernels import get_kernels
from qwen3_api.model.attention import AttentionMetadata, allocate_kv_cache
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

logger = logging.getLogger(__name__)


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one KV block takes over all layers (K and V)."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * config.head_dim * elem


def num_kv_blocks(
    config: ModelConfig,
    block_size: int,
    dtype: torch.dtype,
    kv_cache_memory: float | None,
    device: torch.device,
    *,
    gpu_memory_utilization: float = 0.9,
    max_useful_blocks: int | None = None,
) -> int:
    """How many blocks fit the KV budget (see :class:`EngineArgs`), never more than ``max_useful_blocks``
    (what ``max_num_seqs`` full-length sequences could use: more would only cost memory and start-up time)."""
    budget = kv_cache_budget_bytes(kv_cache_memory, device, gpu_memory_utilization)
    num_blocks = budget // kv_block_bytes(config, block_size, dtype)
    if num_blocks < 1:
        raise ValueError(
            f"--kv-cache-memory {kv_cache_memory} gives {budget} bytes: not even one KV block "
            f"({kv_block_bytes(config, block_size, dtype)} bytes); raise it"
        )
    if max_useful_blocks is not None:
        num_blocks = min(num_blocks, max_useful_blocks)
    return int(num_blocks)


class ModelRunner:
    """Runs the model over the scheduled sequences of one step."""

    def __init__(
        self,
        model: Qwen3ForCausalLM,
        config: ModelConfig,
        *,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
        max_num_seqs: int | None = None,
        max_model_len: int | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = device
        self.kv_caches = allocate_kv_cache(config, num_blocks, block_size, device, dtype)
        # Decode steps replay CUDA graphs on the GPU (Triton kernels only); the CPU path never builds one.
        self.graph_runner = None
        if cuda_graphs and device.type == "cuda" and get_kernels(device).name == "triton":
            from qwen3_api.kernels.cuda_graphs import CudaGraphDecodeRunner

            max_len = min(max_model_len or num_blocks * block_size, num_blocks * block_size)
            self.graph_runner = CudaGraphDecodeRunner(
                model, self.kv_caches, max_batch_size=max_num_seqs or 64,
                max_blocks_per_seq=-(-max_len // block_size),
            )  # fmt: skip
            try:
                self.graph_runner.capture()
            except (RuntimeError, torch.OutOfMemoryError):
                logger.exception("CUDA-graph capture failed: decode steps run eagerly")
                self.graph_runner = None

    @torch.inference_mode()
    def execute(self, seqs: list[Sequence]) -> tuple[torch.Tensor | None, list[Sequence]]:
        """Compute the scheduled tokens of ``seqs``; return the logits [S, vocab] of the S sequences whose
        chunk reaches their last token (they sample a new token), and those sequences, in batch order."""
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_lens: list[int] = []
        context_lens: list[int] = []
        tables: list[list[int]] = []
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        for seq in seqs:
            start = seq.num_computed_tokens
            end = start + seq.num_scheduled_tokens
            table = seq.block_table
            input_ids.extend(seq.token_ids[start:end])
            if end - start == 1:
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                positions.extend(range(start, end))
                slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            query_lens.append(end - start)
            context_lens.append(end)
            tables.append(table)
            if end == len(seq.token_ids):
                sample_rows.append(len(input_ids) - 1)
                sample_seqs.append(seq)
        dev = self.device
        width = max(len(t) for t in tables)
        padded = [t + [0] * (width - len(t)) for t in tables]
        cu = [0]
        for q in query_lens:
            cu.append(cu[-1] + q)
        attn = AttentionMetadata(
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=dev),
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=dev),
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            block_tables=torch.tensor(padded, dtype=torch.int32, device=dev),
            query_lens_cpu=query_lens,
            context_lens_cpu=context_lens,
            max_query_len=max(query_lens),
            max_context_len=max(context_lens),
            is_decode=len(input_ids) == len(seqs),
        )
        ids_t = torch.tensor(input_ids, dtype=torch.long, device=dev)
        pos_t = torch.tensor(positions, dtype=torch.long, device=dev)
        if self.graph_runner is not None and self.graph_runner.can_run(attn):
            hidden = self.graph_runner.run(ids_t, pos_t, attn)
        else:
            hidden = self.model(ids_t, pos_t, attn, self.kv_caches)
        if not sample_rows:
            return None, []
        if len(sample_rows) < hidden.shape[0]:
            hidden = hidden[torch.tensor(sample_rows, device=dev)]
        return self.model.compute_logits(hidden), sample_seqs
