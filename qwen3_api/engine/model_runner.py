"""One step's batch -> flat tensors -> the model's forward -> the logits of the rows that sample.

The runner owns the paged KV cache (engine/kv_cache.py) and, on CUDA with the Triton kernels, the CUDA-graph
decode runner that shares it (engine/cuda_graphs.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from qwen3_api.engine.cuda_graphs import CudaGraphDecodeRunner
from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.engine.scheduler import ScheduledBatch
from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StepInputs:
    """The model's inputs for one step, and which rows of its output sample."""

    input_ids: torch.Tensor  # long [T]
    positions: torch.Tensor  # long [T]
    attn: AttentionMetadata
    sample_rows: list[int]  # the flat index of each sampling sequence's last token, in batch order


def prepare_inputs(batch: ScheduledBatch, block_size: int, device: torch.device) -> StepInputs:
    """Flatten the scheduled chunks of ``batch`` into one batch; the attention metadata comes from the one
    builder every caller uses (AttentionMetadata.build)."""
    input_ids: list[int] = []
    positions: list[int] = []
    query_lens: list[int] = []
    context_lens: list[int] = []
    sample_rows: list[int] = []
    for seq, num_tokens, samples in zip(batch.seqs, batch.num_tokens, batch.samples, strict=True):
        start = seq.num_computed_tokens
        end = start + num_tokens
        input_ids.extend(seq.token_ids[start:end])
        positions.extend(range(start, end))
        query_lens.append(num_tokens)
        context_lens.append(end)
        if samples:
            sample_rows.append(len(input_ids) - 1)
    tables = [seq.block_table for seq in batch.seqs]
    return StepInputs(
        input_ids=torch.tensor(input_ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        attn=AttentionMetadata.build(query_lens, context_lens, tables, block_size, device),
        sample_rows=sample_rows,
    )


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
        # before the first request: native CPU kernels built, the lm_head's one-row linear timed (nano-vllm's
        # warmup_model); once per model, however many runners share it
        model.warm_up_kernels()
        # Decode steps replay CUDA graphs on the GPU (Triton kernels only); the CPU path never builds one.
        self.graph_runner: CudaGraphDecodeRunner | None = None
        if cuda_graphs and device.type == "cuda" and model.kernels.name == "triton":
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
    def execute(self, batch: ScheduledBatch) -> torch.Tensor | None:
        """Compute the scheduled tokens of ``batch``; the logits [S, vocab] of its S sampling sequences
        (``batch.sampling_seqs``, in batch order), or None when no sequence samples this step."""
        inputs = prepare_inputs(batch, self.block_size, self.device)
        if self.graph_runner is not None and self.graph_runner.can_run(inputs.attn):
            hidden = self.graph_runner.run(inputs.input_ids, inputs.positions, inputs.attn)
        else:
            hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn, self.kv_caches)
        rows = inputs.sample_rows
        if not rows:
            return None
        if len(rows) < hidden.shape[0]:
            hidden = hidden[torch.tensor(rows, device=self.device)]
        return self.model.compute_logits(hidden)
