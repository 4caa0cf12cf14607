"""One request's work in the engine, metered: the engine stream inside the platform's Meter and the shutdown drain.

    async with metered_run(state, meter, prompt_ids, params) as run:   # admits (unless already), tracked by the drain
        async for out in run.outputs(): ...                           # RequestOutputs; TTFT / ITL metrics
    # here: the engine request is aborted if still running (its KV blocks freed) and the meter has settled once

The services own the text (chat or legacy) and write the token counts into ``meter.usage`` as they go; this owns
the engine side: the stream, its abort, the drain's cut at the shutdown deadline, and the metrics at the end.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from qwen3_api.api import access_log
from qwen3_api.api.state import AppState
from qwen3_api.engine.exceptions import PromptTooLongError
from qwen3_api.engine.outputs import RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import APIError
from qwen3_api.platform.meter import Meter

log = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    """``chatcmpl-<32 hex>`` / ``cmpl-<32 hex>``: the response id, also the ledger's generation id."""
    return f"{prefix}-{uuid.uuid4().hex}"


class EngineRun:
    """The engine request of one generation: its outputs, its abort, and the cut at the shutdown deadline."""

    def __init__(self, state: AppState, meter: Meter, prompt_ids: list[int], params: SamplingParams) -> None:
        self.state = state
        self.meter = meter
        self.request_id = meter.generation_id
        self.prompt_ids = prompt_ids
        self.params = params
        self._done = False  # the engine has finished or been told to abort
        self._cut: APIError | None = None
        self._last_step: float | None = None

    async def outputs(self) -> AsyncIterator[RequestOutput]:
        """The engine's outputs (delta mode); PromptTooLongError becomes ``context_length_exceeded``; a run cut
        at the shutdown deadline raises the drain's 503."""
        if self._cut is not None:
            raise self._cut
        metrics = self.state.metrics
        try:
            async for out in self.state.engine.generate(self.prompt_ids, self.params, self.request_id):
                if self._cut is not None:
                    raise self._cut
                now = time.monotonic()
                if self.meter.ttft_s is None:
                    self.meter.first_token()
                    metrics.ttft.observe(self.meter.ttft_s or 0.0)
                    self.meter.usage.cached_tokens = int(out.num_cached_tokens or 0)
                elif self._last_step is not None:
                    metrics.itl.observe(now - self._last_step)
                self._last_step = now
                self._done = self._done or out.finished
                yield out
        except PromptTooLongError as exc:
            raise APIError(400, f"This model's maximum context length is {self.state.max_model_len} tokens: "
                           f"{exc}.", param="messages", code="context_length_exceeded") from None

    async def abort(self) -> None:
        """Stop the engine's work on this request (idempotent); its KV blocks go back to the pool."""
        if not self._done:
            self._done = True
            try:
                await self.state.engine.abort(self.request_id)
            except Exception:  # noqa: BLE001 - an abort must never turn a response into an error
                log.exception("abort of %s failed", self.request_id)

    async def cut(self, err: APIError) -> None:
        """The shutdown deadline: stop the engine's work; ``outputs`` then raises ``err`` (drain.py)."""
        self._cut = err
        await self.abort()


@contextlib.asynccontextmanager
async def metered_run(state: AppState, meter: Meter, prompt_ids: list[int], params: SamplingParams
                      ) -> AsyncIterator[EngineRun]:
    """An EngineRun inside its meter: admitted (if not yet), tracked by the drain until the meter has settled."""
    run = EngineRun(state, meter, prompt_ids, params)
    access_log.note(id=meter.generation_id, key=meter.principal.label)
    try:
        state.drain.track(run)  # past the shutdown deadline: 503, and an admitted meter settles free
    except APIError:
        await meter.settle("error")
        raise
    try:
        async with meter:
            try:
                yield run
            finally:
                await run.abort()  # choices ended by stop strings, or a client gone, leave it running
    finally:
        state.drain.untrack(run)
        _observe(state, meter)


def _observe(state: AppState, meter: Meter) -> None:
    usage = meter.usage
    state.metrics.observe_usage(usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens,
                                usage.cached_tokens)
    state.metrics.e2e.observe(time.monotonic() - meter.started)
    access_log.note(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    outcome=meter.status)
