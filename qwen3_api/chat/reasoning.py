"""The ``<think> ... </think>`` split, decided on token ids, and the text clean-up around it.

Qwen3 writes its thought between the ``<think>`` and ``</think>`` tokens (ids read from the tokenizer). With
thinking off the prompt already ends with ``<think>\\n\\n</think>\\n\\n``, so generation starts in the answer; with
thinking on the model opens ``<think>`` itself. Routing by token id (not by searching text) means a literal
"</think>" typed inside an answer or a half-decoded tag can never flip the state, and tags never reach content.

Stop strings apply to the answer only, never to the reasoning: a stop such as "\\n\\n" would otherwise end almost
every thought in its first paragraph (vLLM checks them everywhere and so cuts thinking models short).
"""

from __future__ import annotations

import enum

from qwen3_api.chat.tokens import ChatTokenizer

# The Qwen team's way to end a thought early: append this sentence and the closing tag, then let the model answer.
BUDGET_CLOSING_TEXT = (
    "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking directly now.\n"
)


class ThinkState(enum.Enum):
    """Where generation is: before any tag (thinking on, nothing written yet), inside the thought, answering."""

    START = "start"
    THINKING = "thinking"
    ANSWER = "answer"


def initial_think_state(prompt_ids: list[int], tok: ChatTokenizer) -> ThinkState:
    """Read the state at the end of the prompt: the last think tag after the last ``<|im_start|>`` decides."""
    for tid in reversed(prompt_ids):
        if tid == tok.think_end_id:
            return ThinkState.ANSWER
        if tid == tok.think_start_id:
            return ThinkState.THINKING
        if tid == tok.im_start_id:
            break
    return ThinkState.START


def budget_closing_ids(tok: ChatTokenizer) -> list[int]:
    """Tokens forced when the thinking budget is spent: the closing sentence, ``</think>``, then "\\n\\n"."""
    if tok.think_end_id is None:
        raise ValueError("this tokenizer has no </think> token: a thinking budget cannot be applied")
    return tok.encode(BUDGET_CLOSING_TEXT) + [tok.think_end_id] + tok.encode("\n\n")


def short_closing_ids(tok: ChatTokenizer) -> list[int]:
    """``</think>`` and "\\n\\n" alone: the closing when max_tokens leaves no room for the sentence."""
    if tok.think_end_id is None:
        raise ValueError("this tokenizer has no </think> token")
    return [tok.think_end_id] + tok.encode("\n\n")


class ReasoningSplitter:
    """Routes each generated token to "reasoning", "content" or "tag" (a think tag, never shown)."""

    def __init__(self, tok: ChatTokenizer, state: ThinkState) -> None:
        self._start_id = tok.think_start_id
        self._end_id = tok.think_end_id
        self.state = state
        self.thought_tokens = 0  # tokens from <think> to </think> inclusive
        self.saw_thought = state is ThinkState.THINKING

    def route(self, token_id: int) -> str:
        """Advance the state with one token and say where it belongs."""
        if token_id == self._start_id:
            if self.state is ThinkState.START:
                self.state = ThinkState.THINKING
                self.saw_thought = True
            if self.state is ThinkState.THINKING:
                self.thought_tokens += 1
            return "tag"
        if token_id == self._end_id:
            if self.state is not ThinkState.ANSWER:
                self.thought_tokens += 1
            self.state = ThinkState.ANSWER
            return "tag"
        if self.state is ThinkState.THINKING:
            self.thought_tokens += 1
            return "reasoning"
        self.state = ThinkState.ANSWER
        return "content"


class EdgeTrimmer:
    """Streams text with leading newlines dropped and trailing ones held back.

    The model surrounds its thought with newlines (``<think>\\n...\\n</think>``) and starts its answer after
    "\\n\\n"; the template strips those when it renders history, so the API does too. Trailing newlines are held
    until more text shows they were inside the text, and dropped when the segment ends.
    """

    def __init__(self, strip_chars: str = "\n") -> None:
        self._chars = strip_chars
        self._started = False
        self._held = ""

    def push(self, text: str) -> str:
        """Add text; return what is safe to emit now."""
        if not self._started:
            text = text.lstrip(self._chars)
            if not text:
                return ""
            self._started = True
        buf = self._held + text
        body = buf.rstrip(self._chars)
        self._held = buf[len(body) :]
        return body

    def release(self) -> str:
        """The segment goes on after all: emit the held trailing characters."""
        out, self._held = self._held, ""
        return out

    def drop(self) -> None:
        """The segment ended: the held trailing characters are discarded."""
        self._held = ""

    @property
    def started(self) -> bool:
        """True once any non-trimmed text has been seen."""
        return self._started
