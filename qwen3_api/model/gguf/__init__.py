"""GGUF files (llama.cpp's format): Qwen3 / Qwen3-MoE served from their quantized weights on the CPU.

``prepare(path, tokenizer_dir=None)`` turns a .gguf file, a directory holding one, or a split set into a checkpoint
directory the rest of the server reads like a Hugging Face one (config, tokenizer, chat template: sidecar.py);
``load_gguf_model(directory)`` builds the network over the file's weights, memory-mapped and kept quantized
(loader.py, weights.py, network.py; the kernels are kernels/quant_*.py).
"""

from __future__ import annotations

from qwen3_api.model.gguf.files import GgufError, looks_like_gguf
from qwen3_api.model.gguf.loader import is_prepared, load_gguf_model
from qwen3_api.model.gguf.sidecar import prepare, read_pointer

__all__ = ["GgufError", "is_prepared", "load_gguf_model", "looks_like_gguf", "prepare", "read_pointer"]
