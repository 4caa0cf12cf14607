"""One per-sequence ``TokenConstraint`` (engine/constraint.py's protocol) for everything chat steers.

A small state machine over the generated tokens::

    START ──<think>──> THINKING ──budget spent──> FORCING (closing sentence, </think>, "\\n\\n") ──> ANSWER
      │                    └────────</think>───────────────────────────────────────────────────────> ANSWER
      └── any other token (the model answered without thinking) ──────────────────────────────────> ANSWER

- THINKING is free (no mask) except for the budget; FORCING allows exactly one token per step.
- A forced answer (tool_choice required / named, a response_format schema) is pending while the model thinks:
  then the thought may not end the message (the end tokens are masked inside it), and it is closed, as the budget
  closes it, once ``max_tokens`` leaves only the room the answer needs (answer_room.py). START allows ``<think>``
  only when there is room to think at all. So a forced answer ends with the call / the object, or at max_tokens
  ("length"), never with a bare "stop" mid-thought.
- ANSWER applies the answer grammar (response_format, tool_choice required/named) from its first token, and
  lets the "\\n\\n" separator the model writes after ``</think>`` through first. START allows the grammar's first
  tokens or ``<think>``, so a thinking model is never blocked from opening its thought (peer pitfall #11).
- Without a grammar, ANSWER can still forbid ``<tool_call>`` (tool_choice none), stop after one call
  (parallel_tool_calls false: only the eos may follow a ``</tool_call>``) and constrain the inside of a
  ``<tool_call>`` block to the strict tools' schemas.
- Ids past the tokenizer (the model's padded vocabulary) are forbidden whenever a step is constrained.

At max_tokens the engine stops the sequence wherever it is ("length"): a JSON answer is then an unfinished prefix,
as with OpenAI (the SDK's parse() raises LengthFinishReasonError); a thinking budget (or, with a forced answer,
the room kept for it) keeps a long thought from eating the whole max_tokens before the answer starts.

If the engine ever accepts a token the grammar rejects (it should not: it samples under the mask), the
constraint stops constraining rather than masking everything, and ``error`` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from qwen3_api.chat.answer_room import answer_room
from qwen3_api.chat.reasoning import ThinkState, budget_closing_ids, initial_think_state, short_closing_ids
from qwen3_api.chat.structured import (
    Grammar,
    response_format_grammar,
    tool_block_grammar,
    tool_calls_grammar,
    tool_function,
)
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.errors import invalid

# With a forced answer and a small max_tokens, the long closing sentence is used only if it leaves this many
# thought tokens; otherwise the thought is closed with "</think>\n\n" alone.
MIN_THOUGHT = 16


def _clear_all(row: torch.Tensor) -> None:
    row.zero_()


def _set_bit(row: torch.Tensor, tid: int) -> None:
    word, bit = divmod(tid, 32)
    value = int(row[word]) | (1 << bit)
    row[word] = value - (1 << 32) if value >= 1 << 31 else value  # int32 two's complement


def _clear_bit(row: torch.Tensor, tid: int) -> None:
    word, bit = divmod(tid, 32)
    value = (int(row[word]) & 0xFFFFFFFF) & ~(1 << bit)
    row[word] = value - (1 << 32) if value >= 1 << 31 else value


def _clear_from(row: torch.Tensor, first: int) -> None:
    # Forbid every id >= first (the ids the tokenizer does not have).
    word, bit = divmod(first, 32)
    if word >= row.numel():
        return
    if bit:
        keep = (1 << bit) - 1
        value = (int(row[word]) & 0xFFFFFFFF) & keep
        row[word] = value - (1 << 32) if value >= 1 << 31 else value
        word += 1
    row[word:] = 0


class ChatConstraint:
    """Thinking budget + answer grammar + tool-call rules for one sequence (never shared between choices)."""

    def __init__(
        self,
        tok: ChatTokenizer,
        *,
        state: ThinkState,
        budget: int | None = None,
        closing_ids: list[int] | None = None,
        grammar: Grammar | None = None,
        forbid_tool_calls: bool = False,
        max_tool_calls: int | None = None,
        tool_block: Grammar | None = None,
        max_tokens: int | None = None,
        answer_room: int = 0,
    ) -> None:
        self._tok = tok
        self.state = state
        self._budget = budget
        self._closing = closing_ids or []
        self._forced_pos = 0
        self._forcing = False  # writing the closing of the thought, one forced token per step
        self.thought_tokens = 0
        self._generated = 0
        self._max_tokens = max_tokens
        self._room = answer_room
        self._matcher: Any = grammar.new_matcher() if grammar is not None else None
        self._forbid_tool = forbid_tool_calls and tok.tool_call_start_id is not None
        self._max_calls = max_tool_calls
        self._calls = 0
        self._block_grammar = tool_block
        self._block: Any = None
        self._answer_started = state is ThinkState.ANSWER
        self._sep_ids = set(tok.encode("\n\n")[:1])
        self.error: str | None = None
        self._width = (tok.model_vocab_size + 31) // 32
        if state is ThinkState.THINKING:
            self._forcing = self._must_close()

    # ---- TokenConstraint ------------------------------------------------------------------------------------

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> bool:
        """Clear the bits of forbidden tokens in ``bitmask[row]``; False when this step is free."""
        if self.error is not None:
            return False
        r = bitmask[row]
        if self.state is ThinkState.THINKING:
            if self._forcing:
                return self._force(r, self._closing[self._forced_pos])
            if self._matcher is None:
                return False
            for tid in self._tok.end_token_ids:  # the forced answer is still to come: the thought may not end
                _clear_bit(r, tid)
            return True
        if self._block is not None:
            self._fill_from(self._block, r)
            return True
        if self._matcher is not None:
            self._fill_from(self._matcher, r)
            if self.state is ThinkState.START:
                if self._tok.think_start_id is not None and self._room_to_think():
                    _set_bit(r, self._tok.think_start_id)
            elif not self._answer_started:
                for sep in self._sep_ids:
                    _set_bit(r, sep)
            return True
        if self._max_calls is not None and self._calls >= self._max_calls:
            return self._force(r, self._tok.eos_token_id)
        if self._forbid_tool:
            _clear_bit(r, self._tok.tool_call_start_id)
            return True
        return False

    def accept_token(self, token_id: int) -> None:
        """Advance with the sampled token."""
        if self.error is not None:
            return
        tok = self._tok
        self._generated += 1
        if self.state is ThinkState.START:
            if token_id == tok.think_start_id:
                self.state = ThinkState.THINKING
                self._forcing = self._must_close()
                return
            self.state = ThinkState.ANSWER
        if self.state is ThinkState.THINKING:
            if self._forcing:
                self._forced_pos += 1
                if self._forced_pos >= len(self._closing):
                    self.state = ThinkState.ANSWER
                    self._answer_started = True  # the forced closing already wrote the "\n\n"
                return
            if token_id == tok.think_end_id:
                self.state = ThinkState.ANSWER
                return
            self.thought_tokens += 1
            self._forcing = self._must_close()
            return
        self._accept_answer(token_id)

    def is_finished(self) -> bool:
        """The answer grammar is complete: nothing but the eos could follow."""
        return self.error is None and self._matcher is not None and self._answer_started and self._matcher.is_stopped()

    # ---- helpers --------------------------------------------------------------------------------------------

    def _must_close(self) -> bool:
        """The thought ends now: its budget is spent, or a forced answer needs the tokens that are left."""
        if self._budget is not None and self.thought_tokens >= self._budget:
            return True
        return not self._room_left(self._generated)

    def _room_left(self, used: int) -> bool:
        # Room for one more thought token, the closing and the forced answer (always, when nothing is forced).
        if self._matcher is None or self._max_tokens is None or not self._closing:
            return True
        return used + 1 + len(self._closing) + self._room <= self._max_tokens

    def _room_to_think(self) -> bool:
        # <think> itself, then at least one thought token, before the thought is closed.
        return self._room_left(self._generated + 1)

    def _accept_answer(self, token_id: int) -> None:
        tok = self._tok
        if not self._answer_started:
            self._answer_started = True
            if token_id in self._sep_ids and self._matcher is not None:
                return  # the separator after </think> is layout, not part of the answer's grammar
        if self._block is not None:
            self._consume(self._block, token_id)
            if self._block is not None and self._block.is_stopped():
                self._block = None
                self._calls += 1
            return
        if self._matcher is not None:
            self._consume(self._matcher, token_id)
            return
        if token_id == tok.tool_call_start_id:
            if self._block_grammar is not None:
                self._block = self._block_grammar.new_matcher()
        elif token_id == tok.tool_call_end_id:
            self._calls += 1

    def _consume(self, matcher: Any, token_id: int) -> None:
        if not matcher.consume_token(token_id):
            self.error = matcher.get_error() or f"token {token_id} rejected by the grammar"

    def _force(self, r: torch.Tensor, tid: int | None) -> bool:
        _clear_all(r)
        if tid is not None:
            _set_bit(r, tid)
        return True

    def _fill_from(self, matcher: Any, r: torch.Tensor) -> None:
        if r.is_contiguous() and r.numel() == self._width and r.device.type == "cpu":
            matcher.unsafe_compute_mask_ptr(r.data_ptr(), r.numel() * 4)
        else:
            scratch = torch.empty(self._width, dtype=torch.int32)
            matcher.unsafe_compute_mask_ptr(scratch.data_ptr(), self._width * 4)
            n = min(self._width, r.numel())
            r[:n] = scratch[:n].to(r.device)
            r[n:] = 0
        _clear_from(r, self._tok.vocab_size)



def constraint_factory(
    tok: ChatTokenizer,
    *,
    prompt_ids: list[int],
    response_format: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = None,
    parallel_tool_calls: bool = True,
    thinking_budget: int | None = None,
    max_tokens: int | None = None,
    think_state: ThinkState | None = None,
) -> Callable[[], ChatConstraint] | None:
    """Compile a request's constraints once; return a factory of fresh per-sequence states (None: unconstrained).

    tool_choice "required" or a named function take precedence over response_format (the answer is the calls).
    A named function gets exactly one call. Raises APIError 400 (with ``param``) for bad schemas and choices.
    ``max_tokens`` (the completion budget) lets a thought be closed in time for a forced answer; ``think_state``
    overrides the state read from the prompt (ANSWER for a template that never thinks).
    """
    state = think_state if think_state is not None else initial_think_state(prompt_ids, tok)
    tools = tools or []
    grammar = None
    forbid = False
    max_calls = None
    block = None
    if tool_choice == "required":
        grammar = tool_calls_grammar(tok, tools, parallel=parallel_tool_calls)
    elif isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [t for t in tools if tool_function(t).get("name") == name]
        if not chosen:
            raise invalid(f"tool_choice names function {name!r}, which is not in tools", "tool_choice")
        grammar = tool_calls_grammar(tok, chosen[:1], parallel=False)
    elif tool_choice not in (None, "auto", "none"):
        raise invalid(f"unknown tool_choice {tool_choice!r}", "tool_choice")
    if grammar is None:
        grammar = response_format_grammar(tok, response_format)
        forbid = tool_choice == "none" and bool(tools)
        if tools and tool_choice != "none":
            if not parallel_tool_calls:
                max_calls = 1
            if any(tool_function(t).get("strict") for t in tools):
                block = tool_block_grammar(tok, tools)
    if thinking_budget is not None and thinking_budget < 0:
        raise invalid("reasoning.max_tokens must be >= 0", "reasoning.max_tokens")
    budget = thinking_budget if state is not ThinkState.ANSWER else None
    if grammar is None and not forbid and max_calls is None and block is None and budget is None:
        return None
    room = 0
    closing = budget_closing_ids(tok) if budget is not None else None
    if grammar is not None and state is not ThinkState.ANSWER and tok.think_end_id is not None:
        room = answer_room(tok, response_format=response_format, tools=tools, tool_choice=tool_choice)
        closing = budget_closing_ids(tok)
        if max_tokens is not None and max_tokens < len(closing) + room + MIN_THOUGHT:
            # Too little room for the Qwen team's closing sentence: close with just the tag.
            closing = short_closing_ids(tok)

    def make() -> ChatConstraint:
        return ChatConstraint(tok, state=state, budget=budget, closing_ids=closing, grammar=grammar,
                              forbid_tool_calls=forbid, max_tool_calls=max_calls, tool_block=block,
                              max_tokens=max_tokens, answer_room=room)

    return make
