"""Test doubles for the API layer: an engine that plays scripted token ids, a gateway that records its calls.

The scripted engine has the AsyncLLMEngine surface (generate / abort / stats / max_model_len) so the HTTP
layer's parsing, framing and bookkeeping can be checked against exact, known outputs; the real engine with
random weights is exercised by tests/e2e.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from qwen3_api.engine.exceptions import PromptTooLongError
from qwen3_api.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import APIError
from qwen3_api.platform.db import Database
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.pricing import Usage
from qwen3_api.platform.principal import Principal, bearer_token
from qwen3_api.platform.response_store import ResponseStore
from qwen3_api.platform.tables import metadata

ANYONE = Principal(key_hash="anyone", key_id=None, name="anyone", label="sk-…test")
OTHER = Principal(key_hash="other", key_id=None, name="other", label="sk-…othr")


def _scratch_store() -> ResponseStore:
    db = Database(f"sqlite:///{tempfile.mkdtemp(prefix='qwen3-api-test-')}/store.db")
    metadata.create_all(db.engine)
    return ResponseStore(db)

Script = Callable[[list[int], SamplingParams, int], list[int]]


@dataclass
class _ModelConfig:
    vocab_size: int = 151936


class ScriptedEngine:
    """Emits ``script(prompt_ids, params, choice_index)`` one token per step (``step_s`` apart).

    Respects ``max_tokens`` ("length"); a script that runs out ends with "stop". ``fail_after`` raises
    mid-stream; ``first_token_delay_s`` imitates a long prefill.
    """

    def __init__(self, script: Script, *, max_model_len: int = 4096, step_s: float = 0.0,
                 first_token_delay_s: float = 0.0) -> None:
        self.script = script
        self.max_model_len = max_model_len
        self.model_config = _ModelConfig()
        self.step_s = step_s
        self.first_token_delay_s = first_token_delay_s
        self.fail_after: int | None = None
        self.active: set[str] = set()
        self.aborted: list[str] = []
        self.requests: list[tuple[list[int], SamplingParams, str]] = []
        self.shutdown_called = False

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str
                       ) -> AsyncIterator[RequestOutput]:
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len, "the model's context")
        self.requests.append((list(prompt_ids), params, request_id))
        self.active.add(request_id)
        finished = False
        try:
            plans = [self.script(prompt_ids, params, i) for i in range(params.n)]
            limit = params.max_tokens or 10**9
            done = [False] * params.n
            step = 0
            if self.first_token_delay_s:
                await asyncio.sleep(self.first_token_delay_s)
            while not all(done):
                if self.fail_after is not None and step >= self.fail_after:
                    raise RuntimeError("scripted engine failure")
                outs = []
                for i, plan in enumerate(plans):
                    if done[i]:
                        continue
                    tid = plan[step]
                    reason = None
                    if step + 1 >= limit:
                        reason = "length"
                    elif step + 1 >= len(plan):
                        reason = "stop"
                    done[i] = reason is not None
                    lp = None
                    if params.logprobs is not None:
                        lp = [{tid: -0.25, **{(tid + k) % 1000 + 10: -1.0 - k for k in range(1, params.logprobs + 1)}}]
                    outs.append(CompletionOutput(index=i, token_ids=[tid], logprobs=lp, finish_reason=reason,
                                                 num_tokens=step + 1))
                step += 1
                finished = all(done)
                yield RequestOutput(request_id, list(prompt_ids), 0, outs, finished=finished)
                await asyncio.sleep(self.step_s)
        finally:
            # As the real engine: an iterator closed before the end aborts its request.
            if not finished and request_id not in self.aborted:
                self.aborted.append(request_id)
            self.active.discard(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id in self.active and request_id not in self.aborted:
            self.aborted.append(request_id)
        self.active.discard(request_id)

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.active), waiting=0, kv_usage=0.1 * len(self.active),
                           prefix_cache_hit_rate=0.0, num_blocks=64, block_size=16, num_preemptions=0)

    @property
    def is_running(self) -> bool:
        return not self.shutdown_called

    async def shutdown(self) -> None:
        self.shutdown_called = True


@dataclass
class RecordingGateway:
    """Authenticates everyone, records admit/settle, and can be told to refuse admission."""

    refuse: APIError | None = None
    admitted: list[dict[str, Any]] = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)

    closed: bool = False
    # Stored Responses: the real store over a throw-away SQLite file (the store's key scoping is under test).
    responses: ResponseStore = field(default_factory=lambda: _scratch_store())

    async def authenticate(self, authorization: str | None) -> Principal:
        # "Bearer other" is a second key, to show that one key never sees another's stored responses.
        return OTHER if bearer_token(authorization) == "other" else ANYONE

    async def close(self) -> None:
        self.closed = True

    def meter(self, principal: Principal, entry: Any, *, prompt_tokens: int, max_tokens: int, generation_id: str,
              streamed: bool, endpoint: str | None = None) -> Meter:
        """The real Meter over this recording admit / settle."""
        return Meter(self, principal, entry, prompt_tokens=prompt_tokens,
                     max_tokens=max_tokens, generation_id=generation_id, streamed=streamed, endpoint=endpoint)

    def authorize_model(self, principal: Any, model_id: str) -> None:
        return None

    async def admit(self, principal: Any, entry: Any, *, prompt_tokens: int, max_tokens: int,
                    generation_id: str) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        adm = {"entry": entry, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
               "generation_id": generation_id, "headers": {"X-RateLimit-Limit": "100"}}
        self.admitted.append(adm)
        return _Admission(adm)

    async def settle(self, admission: Any, usage: Usage, *, status: str, streamed: bool, ttft_s: float | None,
                     duration_s: float, endpoint: str | None = None) -> Decimal:
        self.settled.append({"generation_id": admission.data["generation_id"], "usage": usage, "status": status,
                             "streamed": streamed, "ttft_s": ttft_s, "endpoint": endpoint})
        entry = admission.data["entry"]
        return entry.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


@dataclass
class _Admission:
    data: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return self.data["headers"]
