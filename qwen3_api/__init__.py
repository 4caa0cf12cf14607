"""qwen3-api: a self-hosted, OpenAI-compatible API platform for Qwen3-30B-A3B.

The offline API mirrors vLLM's: ``from qwen3_api import LLM, SamplingParams``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that sleep when idle instead of spinning (libgomp reads this once, when torch loads it, so it
# is set here, before anything of ours imports torch; a user's own setting wins). libgomp's default spins
# between parallel regions; on a CPU shared with other work (the server's event loop, other processes) the
# spinning thread takes the core the thread holding the rest of the work needs: measured on the 2-core box
# (benchmarks/RESULTS.md, GGUF section) decode of the small Q4_K_M MoE took 430-880 ms/token spinning against
# 25-45 ms/token passive, prefill 90-100 against 570-590 tokens/s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "__version__"]

if TYPE_CHECKING:
    from qwen3_api.engine.sampling_params import SamplingParams
    from qwen3_api.llm import LLM


def __getattr__(name: str) -> Any:
    # Lazy: `import qwen3_api` (the CLI, the server) must not pay for torch before it needs it.
    if name == "LLM":
        from qwen3_api.llm import LLM

        return LLM
    if name == "SamplingParams":
        from qwen3_api.engine.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)
