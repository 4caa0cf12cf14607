"""One choice's output as an ordered list of blocks (thought, text, tool calls), for the item-based dialects.

OpenAI's Responses API (output items) and Anthropic's Messages API (content blocks) both show a turn as a
sequence of typed parts, opened, filled and closed in order, where chat completions has three fields. This turns
the chat layer's per-step ``ChoiceDelta`` (chat/output.py) into that sequence, once, for both dialects:

    seq = BlockSequencer(exclude_reasoning=False)
    for ev in drive(...):                     # serving_chat.drive
        for op in seq.feed(ev.delta): ...     # BlockOp("open" | "delta" | "close", index, block, text)
        if ev.final: for op in seq.finish(ev.final.delta): ...
    seq.blocks                                # the whole turn: what a non-streamed body is built from

A streamed response renders every op as events; a whole one renders ``seq.blocks``. Both come from the same ops,
so the concatenated stream equals the body by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from qwen3_api.chat.output import ChoiceDelta

BlockType = Literal["reasoning", "text", "tool_call"]


@dataclass(slots=True)
class Block:
    """One part of the turn. ``text`` is the thought, the answer text, or a call's argument JSON so far."""

    type: BlockType
    text: str = ""
    call_id: str | None = None  # tool calls: the id the client answers with
    name: str | None = None     # tool calls: the function
    closed: bool = False


@dataclass(slots=True)
class BlockOp:
    """What changed: a block opened (``text`` empty), grew by ``text``, or closed."""

    kind: Literal["open", "delta", "close"]
    index: int
    block: Block
    text: str = ""


@dataclass(slots=True)
class BlockSequencer:
    """The blocks of one choice, built from its deltas (see the module docstring)."""

    exclude_reasoning: bool = False
    blocks: list[Block] = field(default_factory=list)
    _calls: dict[int, int] = field(default_factory=dict)  # the parser's call index -> block index

    @property
    def _open(self) -> Block | None:
        return self.blocks[-1] if self.blocks and not self.blocks[-1].closed else None

    def feed(self, delta: ChoiceDelta) -> list[BlockOp]:
        """The ops one step makes. The chat layer sends reasoning before the answer, and a step holds one token,
        so taking its thought, text and calls in that order keeps the model's order."""
        ops: list[BlockOp] = []
        if delta.reasoning and not self.exclude_reasoning:
            ops += self._append("reasoning", delta.reasoning)
        if delta.content:
            ops += self._append("text", delta.content)
        for call in delta.tool_calls:
            if call.id is not None:  # a new call: its id and name come on its first piece only
                ops += self._close()
                ops.append(self._start(Block("tool_call", call_id=call.id, name=call.name)))
                self._calls[call.index] = len(self.blocks) - 1
            if call.arguments:
                index = self._calls[call.index]
                block = self.blocks[index]
                block.text += call.arguments
                ops.append(BlockOp("delta", index, block, call.arguments))
        return ops

    def finish(self, rest: ChoiceDelta) -> list[BlockOp]:
        """The held-back rest of the choice (``FinalChoice.delta``), then the last block closes."""
        return self.feed(rest) + self._close()

    def _append(self, kind: BlockType, text: str) -> list[BlockOp]:
        ops: list[BlockOp] = []
        current = self._open
        if current is None or current.type != kind:
            ops += self._close()
            ops.append(self._start(Block(kind)))
            current = self.blocks[-1]
        current.text += text
        ops.append(BlockOp("delta", len(self.blocks) - 1, current, text))
        return ops

    def _start(self, block: Block) -> BlockOp:
        self.blocks.append(block)
        return BlockOp("open", len(self.blocks) - 1, block)

    def _close(self) -> list[BlockOp]:
        current = self._open
        if current is None:
            return []
        current.closed = True
        return [BlockOp("close", len(self.blocks) - 1, current)]
