"""What the Responses and Messages services share: their requests become chat requests, run by the chat service's
own pieces (``prepare_chat``, ``Choices``, ``drive``) under the request's meter, and come back as blocks.

Each dialect translates its body into a ``ChatCompletionRequest`` (so the template, thinking budget, grammars,
sampling defaults and context checks are the chat route's, not copies) and names its own fields in errors:
``rename`` maps the chat parameter an error names (``messages``, ``max_tokens`` ...) onto the dialect's.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from qwen3_api.api.engine_run import metered_run
from qwen3_api.api.errors import format_param
from qwen3_api.api.output_blocks import BlockOp, BlockSequencer
from qwen3_api.api.schemas import ChatCompletionRequest
from qwen3_api.api.serving_chat import Choices, PreparedChat, drive, prepare_chat
from qwen3_api.api.state import AppState
from qwen3_api.chat.output import FinalChoice
from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.meter import Meter

Rename = Callable[[str | None], str | None]


def renamer(table: dict[str, str]) -> Rename:
    """A ``rename`` from prefixes: the longest matching chat prefix is replaced; ``.function.`` (chat's nested
    tool definition) is dropped, since both dialects put name and parameters on the tool itself."""
    ordered = sorted(table.items(), key=lambda kv: -len(kv[0]))

    def rename(param: str | None) -> str | None:
        if param is None:
            return None
        param = re.sub(r"^(tools\[\d+\])\.function\.", r"\1.", param)
        for chat, own in ordered:
            if param == chat or param.startswith(chat + ".") or param.startswith(chat + "["):
                return own + param[len(chat):]
        return param

    return rename


def chat_request(body: dict[str, Any], rename: Rename) -> ChatCompletionRequest:
    """The dialect's request as a chat request; a check only the chat model makes is a 400 in the dialect's terms."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx = (first.get("ctx") or {}).get("error")
        param = rename(getattr(ctx, "param", None) or format_param(tuple(first.get("loc", ()))))
        raise APIError(400, str(ctx) if ctx is not None else first.get("msg", "invalid value"), param=param,
                       code="invalid_value") from None


def prepare(state: AppState, req: ChatCompletionRequest, entry: CatalogEntry, rename: Rename) -> PreparedChat:
    """``prepare_chat`` with the dialect's parameter names in its errors."""
    try:
        return prepare_chat(state, req, entry)
    except APIError as exc:
        exc.param = rename(exc.param)
        raise


def local_entry(state: AppState, model: str, principal: Any, route: str) -> CatalogEntry:
    """The catalog entry, authorized; entries forwarded upstream speak chat completions only."""
    entry = state.entry(model)
    state.gateway.authorize_model(principal, entry.id)
    state.drain.check_open()
    if entry.is_upstream:
        raise APIError(400, f"The model '{entry.id}' is forwarded to an upstream server, which this server reaches "
                       f"through /v1/chat/completions only; {route} serves the local model.", param="model",
                       code="unsupported_model")
    return entry


@dataclass(slots=True)
class Turn:
    """One metered generation seen as blocks: feed it the loop's events, read ``blocks`` and ``final``."""

    prep: PreparedChat
    meter: Meter
    seq: BlockSequencer = field(default_factory=BlockSequencer)
    final: FinalChoice | None = None

    @property
    def blocks(self) -> list[Any]:
        return self.seq.blocks

    async def ops(self, state: AppState) -> AsyncIterator[list[BlockOp]]:
        """The run, step by step, as block ops. The ``async with`` lives here, in the generator the response
        consumes, so a client that leaves closes it and the meter settles as cancelled at once."""
        choices = Choices(self.prep, self.meter)
        async with metered_run(state, self.meter, self.prep.prompt_ids, self.prep.params) as run:
            try:
                async for ev in drive(run, choices):
                    step = self.seq.feed(ev.delta)
                    if ev.final is not None:
                        self.final = ev.final
                        step += self.seq.finish(ev.final.delta)
                    yield step
            finally:
                choices.finish_all("abort")

    async def run(self, state: AppState) -> None:
        """The whole run (a non-streamed response)."""
        async for _ in self.ops(state):
            pass
