"""qwen3-api: a self-hosted, OpenAI-compatible API platform for Qwen3-30B-A3B.

The offline API mirrors vLLM's: ``from qwen3_api import LLM, SamplingParams``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
