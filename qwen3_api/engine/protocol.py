"""The engine as the server sees it: the seam the API layer types against (vLLM's ``EngineClient``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from qwen3_api.engine.outputs import EngineStats, RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.model.config import ModelConfig


@runtime_checkable
class EngineClient(Protocol):
    """What serving code may use of an engine; :class:`~qwen3_api.engine.async_engine.AsyncLLMEngine`
    implements it, and test doubles can be checked against it (``isinstance`` checks the members exist)."""

    max_model_len: int  # the context in force (prompt + completion tokens)
    model_config: ModelConfig

    def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Stream the request's outputs (delta mode); the last has ``finished``. An async generator: raises
        PromptTooLongError at admission, EngineError when the request or the engine fails; closing it early
        aborts the request. (Declared without ``async``: calling an async generator function returns the
        iterator, it is not awaited.)"""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop the request; its stream ends with finish_reason "abort"."""
        ...

    def stats(self) -> EngineStats:
        """The engine's load now: running / waiting sequences, KV usage, prefix-cache hit rate."""
        ...

    @property
    def is_running(self) -> bool:
        """Whether the engine accepts and serves requests (its worker alive, not shut down)."""
        ...

    async def shutdown(self) -> None:
        """Abort everything in flight and stop the engine."""
        ...
