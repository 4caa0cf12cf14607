"""The asyncio face of the engine for the server (the :class:`~qwen3_api.engine.protocol.EngineClient`).

The model runs in one worker thread that owns the LLMEngine. The event loop talks to it only through a
thread-safe queue of typed commands (engine/commands.py: add / abort / shutdown); the worker hands each
request's outputs back with ``loop.call_soon_threadsafe`` into that request's asyncio.Queue, once per step for
all requests of a loop, so the loop never waits on the model.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.commands import (
    AbortCommand,
    EngineCommand,
    EngineRequest,
    OutputStream,
    ShutdownCommand,
)
from qwen3_api.engine.exceptions import EngineError
from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.engine.outputs import EngineStats, RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

Item = RequestOutput | BaseException  # what a request's stream receives: outputs, or the error that ends it
Delivery = tuple[OutputStream, Item]


class AsyncLLMEngine:
    """Requests in from any event loop, streamed RequestOutputs (delta mode) out; one model thread."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_config = engine.model_config
        self.max_model_len = engine.max_model_len
        self._commands: queue.SimpleQueue[EngineCommand] = queue.SimpleQueue()
        self._streams: dict[str, OutputStream] = {}  # touched by the worker thread only
        self._dead: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="qwen3-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_args(cls, args: EngineArgs) -> AsyncLLMEngine:
        """Load the model and tokenizer, size the KV cache and start the worker thread."""
        return cls(LLMEngine.from_engine_args(args))

    # -- the event-loop side ------------------------------------------------------------------------------
    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Stream the request's outputs: each carries the tokens new since the previous one; the last has
        ``finished``. Raises PromptTooLongError at admission; closing the iterator early aborts the request."""
        if self._closed or self._dead is not None:
            raise EngineError("the engine is not running") from self._dead
        prompt = [int(t) for t in prompt_token_ids]
        self.engine.check_prompt(prompt)  # reads only fixed limits: safe from this thread
        stream = OutputStream(asyncio.get_running_loop())
        self._commands.put(EngineRequest(request_id, prompt, params, stream))
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if item.finished:
                    finished = True
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._commands.put(AbortCommand(request_id))

    async def abort(self, request_id: str) -> None:
        """Stop the request; its blocks are freed before the next step and its stream ends with "abort"."""
        self._commands.put(AbortCommand(request_id))

    def stats(self) -> EngineStats:
        """Running / waiting sequences, KV usage, prefix-cache hit rate, number of blocks."""
        return self.engine.stats()

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and self._dead is None and not self._closed

    async def shutdown(self) -> None:
        """Abort everything in flight and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        self._commands.put(ShutdownCommand())
        await asyncio.to_thread(self._thread.join)

    # -- the worker thread ------------------------------------------------------------------------------
    def _worker(self) -> None:
        try:
            while True:
                if not self.engine.has_unfinished_requests():
                    if not self._handle(self._commands.get()):  # idle: sleep until there is work
                        return
                while True:
                    try:
                        cmd = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if not self._handle(cmd):
                        return
                if self.engine.has_unfinished_requests():
                    self._step()
        except BaseException as exc:  # a bug outside step(): fail every request rather than hang them
            logger.exception("engine worker died")
            self._dead = exc
            self._fail_all(EngineError(f"the engine worker died: {exc!r}"))

    def _handle(self, cmd: EngineCommand) -> bool:
        """Apply one command; False once the worker must stop."""
        match cmd:
            case EngineRequest(request_id, prompt, params, stream):
                try:
                    self.engine.add_request(request_id, prompt, params, stream=True)
                except Exception as exc:  # e.g. a duplicate id: that stream raises it
                    self._deliver([(stream, exc)])
                else:
                    self._streams[request_id] = stream
            case AbortCommand(request_id):
                out = self.engine.abort_request(request_id)
                stream = self._streams.pop(request_id, None)
                if stream is not None and out is not None:
                    self._deliver([(stream, out)])
            case ShutdownCommand():
                self.engine.abort_all()
                self._fail_all(EngineError("the engine shut down"))
                return False
        return True

    def _step(self) -> None:
        try:
            result = self.engine.step()
        except Exception as exc:
            logger.exception("engine step failed; aborting the requests in flight")
            err = EngineError(f"the engine failed while running this request: {exc!r}")
            err.__cause__ = exc
            self.engine.abort_all()
            self._fail_all(err)
            return
        items: list[Delivery] = []
        for out in result.outputs:
            stream = self._streams.pop(out.request_id, None) if out.finished else self._streams.get(out.request_id)
            if stream is not None:
                items.append((stream, out))
        for request_id, err in result.failures:
            stream = self._streams.pop(request_id, None)
            if stream is not None:
                items.append((stream, err))
        self._deliver(items)

    def _fail_all(self, err: BaseException) -> None:
        items: list[Delivery] = [(stream, err) for stream in self._streams.values()]
        self._streams.clear()
        self._deliver(items)

    @staticmethod
    def _deliver(items: list[Delivery]) -> None:
        # one wake-up per event loop per step, not one per token
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Item]]] = {}
        for stream, item in items:
            by_loop.setdefault(stream.loop, []).append((stream.queue, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:
                pass  # that loop is closed: nobody is listening


def _put_all(batch: list[tuple[asyncio.Queue, Item]]) -> None:
    for q, item in batch:
        q.put_nowait(item)
