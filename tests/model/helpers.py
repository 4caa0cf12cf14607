"""Reference models from transformers, saved with save_pretrained, and our network run over a flat batch."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen3_api.engine.kv_cache import allocate_kv_cache
from qwen3_api.kernels import cpu_native
from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.qwen3 import Qwen3ForCausalLM

TINY_MOE = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
TINY_DENSE = {
    k: v
    for k, v in TINY_MOE.items()
    if k not in ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob")
} | {"architectures": ["Qwen3ForCausalLM"]}


def hf_model(overrides: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A transformers Qwen3/Qwen3-MoE model with weights large enough that logits spread over ~1."""
    from transformers import Qwen3Config, Qwen3MoeConfig, Qwen3MoeForCausalLM
    from transformers import Qwen3ForCausalLM as HFDense

    arch = overrides["architectures"][0]
    kwargs = {k: v for k, v in overrides.items() if k != "architectures"}
    if arch == "Qwen3MoeForCausalLM":
        config, cls = Qwen3MoeConfig(**kwargs), Qwen3MoeForCausalLM
    else:
        config, cls = Qwen3Config(**kwargs), HFDense
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = cls(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms (and biases): around 1 so they matter
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    return model.to(dtype)


def save_hf(model: torch.nn.Module, path: Path) -> Path:
    model.save_pretrained(path)
    return path


def hf_logits(model: torch.nn.Module, seqs: list[list[int]]) -> list[torch.Tensor]:
    """transformers' logits [len, vocab] float32 for each sequence, run one at a time (no padding)."""
    with torch.no_grad():
        return [model(torch.tensor([s])).logits[0].float() for s in seqs]


def make_contiguous_metadata(
    seq_lens: list[int],
    device: torch.device | str = "cpu",
    block_size: int = 16,
    *,
    context_lens: list[int] | None = None,
    max_model_len: int | None = None,
    seq_ids: list[int] | None = None,
) -> AttentionMetadata:
    """Metadata for running the model without the engine: sequence b owns the fixed block range
    [s*n, (s+1)*n) with s = seq_ids[b] (default b) and n = ceil(max_model_len / block_size).

    seq_lens are the query lengths of this step; context_lens (default: seq_lens, a fresh prefill) the history
    lengths after it. Keep max_model_len and seq_ids fixed across steps so the blocks stay put (chunked
    prefill, decode). (benchmarks/contiguous_kv.py keeps the same helper for the benchmarks.)
    """
    seq_ids = list(range(len(seq_lens))) if seq_ids is None else list(seq_ids)
    context_lens = list(seq_lens) if context_lens is None else list(context_lens)
    longest = max_model_len or max(context_lens, default=1)
    per_seq = -(-longest // block_size)
    tables = [
        list(range(s * per_seq, s * per_seq + -(-c // block_size)))
        for s, c in zip(seq_ids, context_lens, strict=True)
    ]
    return AttentionMetadata.build(list(seq_lens), context_lens, tables, block_size, device)


def our_prefill_logits(
    net: Qwen3ForCausalLM, seqs: list[list[int]], block_size: int = 8
) -> list[torch.Tensor]:
    """Our logits for every token of each sequence, all sequences in one flat batch."""
    lens = [len(s) for s in seqs]
    attn = make_contiguous_metadata(lens, "cpu", block_size)
    per_seq = -(-max(lens) // block_size)
    caches = allocate_kv_cache(net.config, per_seq * len(seqs), block_size, "cpu", net.dtype)
    ids = torch.tensor([t for s in seqs for t in s])
    positions = torch.tensor([p for n in lens for p in range(n)])
    logits = net.compute_logits(net(ids, positions, attn, caches))
    return list(logits.split(lens))


def random_seqs(lens: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lens]


def max_diff(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(ours, ref, strict=True))


def transposed_copy(w: torch.Tensor) -> torch.Tensor:
    """The same values stored as the CPU float32 model stores its weights (kernels.transposed_weights)."""
    return w.transpose(-1, -2).contiguous().transpose(-1, -2)


def native_cpu_ops() -> Any:
    """torch.ops.qwen3_api_cpu; a test needing it fails where it should have built (CI, or any machine with a C++
    compiler) and is skipped only on a developer machine without a compiler, where the torch fallback runs."""
    ops = cpu_native.ops()
    if ops is None and not os.environ.get("CI") and shutil.which("c++") is None:
        pytest.skip("no C++ compiler on this machine: the torch fallback runs instead (tested elsewhere)")
    assert ops is not None, "the native CPU kernels failed to build (see the warning logged by cpu_native)"
    return ops
