"""Engine options: one dataclass, shared by `qwen3-api serve`, the offline LLM and the benchmarks (the KV
cache they size is computed in engine/kv_cache.py).

torch is imported inside the functions that need it: `qwen3-api serve --help` builds these options, and
importing torch alone takes seconds.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_DTYPES = ("float32", "float16", "bfloat16")  # names of torch dtypes
_KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3")  # fp8 = float8_e4m3fn with per-tensor scales (kernels/fp8_kv.py)


@dataclass
class EngineArgs:
    """How to build the engine.

    ``kv_cache_memory`` is GiB when > 1.0, else a fraction of free memory. Left unset it is, on CUDA, what
    ``gpu_memory_utilization`` of the whole GPU leaves after the weights (vLLM's rule), and on the CPU 4 GiB
    (vLLM's CPU default) capped at half the free memory. Either way the cache never holds more blocks than
    ``max_num_seqs`` full-length sequences could use.
    """

    model: str = ""
    tokenizer: str | None = None  # GGUF only: tokenizer.json (+ tokenizer_config.json) instead of the file's
    dtype: str = "auto"  # auto: the checkpoint's dtype on CUDA, float32 on CPU (fast CPU kernels)
    device: str = "auto"  # auto: cuda when available, else cpu
    max_model_len: int | None = None  # default: the checkpoint's native context (32,768 for Qwen3-30B-A3B)
    kv_cache_memory: float | None = None
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    seed: int = 0
    kv_cache_dtype: str = "auto"  # auto: the model dtype; fp8: half the bytes of bf16 (twice the tokens)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", *_DTYPES):
            raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {self.dtype!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be > 0 (GiB, or a fraction <= 1.0), got {self.kv_cache_memory}")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kv_cache_dtype not in _KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {', '.join(_KV_CACHE_DTYPES)}; got {self.kv_cache_dtype!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")

    def resolve_device(self) -> torch.device:
        """The device to run on."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolve_dtype(self, checkpoint_dtype: torch.dtype, device: torch.device) -> torch.dtype:
        """The compute / KV-cache dtype."""
        import torch

        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return checkpoint_dtype if device.type == "cuda" else torch.float32

    def resolve_kv_cache_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        """The KV cache's storage dtype: the model's, or float8_e4m3fn for ``fp8``."""
        import torch

        return model_dtype if self.kv_cache_dtype == "auto" else torch.float8_e4m3fn

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add the engine options to ``parser`` (used by ``qwen3-api serve`` and the benchmarks)."""
        d = EngineArgs()
        g = parser.add_argument_group("engine")
        g.add_argument("--model", default=d.model,
                       help="checkpoint directory or hub id (default: the built-in demo model, random weights), or "
                            "a GGUF file (FILE.gguf, a directory holding one, the first file of a split set)")
        g.add_argument("--tokenizer", default=d.tokenizer,
                       help="GGUF models: a directory with tokenizer.json and tokenizer_config.json (chat template) "
                            "to use instead of the ones the file carries")
        g.add_argument("--dtype", default=d.dtype, choices=["auto", *_DTYPES],
                       help="auto: the checkpoint's dtype on CUDA, float32 on the CPU")
        g.add_argument("--device", default=d.device, help="auto (cuda when available) | cpu | cuda | cuda:N")
        g.add_argument("--max-model-len", type=int, default=d.max_model_len,
                       help="context length; above the native length this turns YaRN on "
                            "(default: the checkpoint's native context)")
        g.add_argument("--kv-cache-memory", type=float, default=d.kv_cache_memory,
                       help="KV cache size: GiB when > 1.0, else a fraction of free memory "
                            "(default: from --gpu-memory-utilization on CUDA, 4 GiB on the CPU)")
        g.add_argument("--gpu-memory-utilization", type=float, default=d.gpu_memory_utilization,
                       help="share of the whole GPU's memory the server may use (weights + KV cache)")
        g.add_argument("--block-size", type=int, default=d.block_size, help="tokens per KV cache block")
        g.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs, help="most sequences running at once")
        g.add_argument("--max-num-batched-tokens", type=int, default=d.max_num_batched_tokens,
                       help="most tokens one engine step computes (prompt chunks and decodes together)")
        g.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                       default=d.enable_prefix_caching, help="reuse the KV cache of prompts' shared prefixes")
        g.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction,
                       default=d.enable_chunked_prefill,
                       help="split long prompts across steps so running streams keep decoding")
        g.add_argument("--seed", type=int, default=d.seed, help="seed of the sampler for requests without one")
        g.add_argument("--kv-cache-dtype", default=d.kv_cache_dtype, choices=list(_KV_CACHE_DTYPES),
                       help="auto: the model dtype; fp8 (= fp8_e4m3): float8_e4m3fn with per-tensor scales, "
                            "twice the tokens of a bf16 cache in the same memory")
        return parser

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> EngineArgs:
        """EngineArgs from a parsed namespace (unknown attributes are ignored)."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})
