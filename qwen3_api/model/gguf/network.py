"""The Qwen3 network over GGUF weights: the same modules and forward, the embedding looked up in quantized rows.

Every layer runs as for a Hugging Face checkpoint (model/layers.py); the difference is in the weights they hold
(kernels/quant_linear.py: QuantTensor, QuantGroup, QuantExperts) and the kernel set that runs them
(``quant_kernels``). Only the embedding lookup, which the base class does with F.embedding, is replaced.
"""

from __future__ import annotations

import torch

from qwen3_api.kernels.metadata import AttentionMetadata
from qwen3_api.model.qwen3 import Qwen3ForCausalLM


class GgufQwen3ForCausalLM(Qwen3ForCausalLM):
    """Qwen3ForCausalLM whose weights are a GGUF file's blocks (built on the meta device, then placed)."""

    quantization: str = ""  # llama.cpp's name of the file's type mix (Q4_K_M ...)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        attn: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """As Qwen3ForCausalLM.forward; the embedding rows come from the quantized table."""
        kernels = self.kernels
        hidden = kernels.linear.embed(input_ids, self.model.embed_tokens.weight)
        cos_sin = self.model.rotary_emb(positions, hidden.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            hidden = layer(hidden, cos_sin, attn, kv_cache, kernels)
        return self.model.norm(hidden, kernels)
