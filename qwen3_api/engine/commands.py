"""What crosses the thread boundary into the engine's worker: small typed commands, and where outputs go."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from qwen3_api.engine.outputs import RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams


@dataclass(slots=True)
class OutputStream:
    """Where one request's outputs go: a queue on the event loop that asked (outputs, then maybe an error)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException] = field(default_factory=asyncio.Queue)


@dataclass(slots=True)
class EngineRequest:
    """Add a request (checked against the fixed limits already); its outputs stream to ``stream``."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: OutputStream


@dataclass(slots=True)
class AbortCommand:
    """Stop a request and free its blocks before the next step; its stream ends with "abort"."""

    request_id: str


@dataclass(slots=True)
class ShutdownCommand:
    """Abort everything in flight, fail the waiting streams and stop the worker."""


EngineCommand = EngineRequest | AbortCommand | ShutdownCommand
