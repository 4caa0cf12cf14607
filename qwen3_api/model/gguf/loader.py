"""Loading a prepared GGUF directory: the config it describes, the network over the file's mapped weights."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from qwen3_api.kernels.quant_linear import quant_kernels
from qwen3_api.model.config import ModelConfig
from qwen3_api.model.gguf.files import GgufError, advise_sequential, open_indexed, prefault
from qwen3_api.model.gguf.network import GgufQwen3ForCausalLM
from qwen3_api.model.gguf.sidecar import read_pointer
from qwen3_api.model.gguf.weights import place_weights

logger = logging.getLogger(__name__)


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a directory made by sidecar.prepare (it holds gguf.json)."""
    p = Path(path)
    return p.is_dir() and read_pointer(p) is not None


def load_gguf_model(
    directory: str | Path,
    *,
    device: torch.device | str | None = None,
    max_model_len: int | None = None,
    progress: bool = True,
) -> tuple[GgufQwen3ForCausalLM, ModelConfig]:
    """The network over the GGUF file(s) a prepared directory names, on the CPU in float32 activations.

    ``max_model_len`` beyond the native context switches on YaRN, as for any checkpoint. A GPU ``device`` is
    ignored with a warning (these kernels are the CPU's; the engine follows the model's device). ``progress`` is
    accepted for load_model's signature: mapping the file takes no time worth a bar.
    """
    del progress
    if device is not None and torch.device(device).type != "cpu":
        logger.warning("GGUF models run on the CPU (quantized CPU kernels): ignoring device %s", device)
    pointer = read_pointer(directory)
    if pointer is None:
        raise GgufError(f"{directory} is not a prepared GGUF directory (no gguf.json)")
    config = ModelConfig.from_pretrained(directory)
    if max_model_len is not None:
        config = config.with_max_model_len(max_model_len)
    config = dataclasses.replace(config, quantization=pointer["file_type"])
    ckpt = open_indexed(pointer["files"], pointer["tensors"])
    advise_sequential(ckpt)
    prefault(ckpt)
    model = GgufQwen3ForCausalLM(config, device="meta", dtype=torch.float32, kernels=quant_kernels())
    unused = place_weights(model, ckpt, config)
    if unused:
        logger.info("GGUF: %d tensors not used by the network: %s", len(unused), ", ".join(unused[:5]))
    model.quantization = pointer["file_type"]
    model.eval()
    logger.info("GGUF model %s: %s, %.2f GiB of weights memory-mapped from %s", pointer.get("name") or "",
                pointer["file_type"], ckpt.nbytes / 2**30, ", ".join(Path(f).name for f in pointer["files"]))
    return model, config
