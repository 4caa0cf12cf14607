"""Bit helpers (int32 two's complement, bit 31) and the thinking-state reading of a prompt."""

from __future__ import annotations

import torch

from qwen3_api.chat.constraint import _clear_bit, _clear_from, _set_bit
from qwen3_api.chat.reasoning import ThinkState, budget_closing_ids, initial_think_state
from tests.chat.helpers import allowed_ids


def test_bit_helpers_handle_the_sign_bit():
    row = torch.zeros(4, dtype=torch.int32)
    for tid in (0, 31, 63, 100):
        _set_bit(row, tid)
    assert allowed_ids(row, 128).tolist() == [0, 31, 63, 100]
    row = torch.full((4,), -1, dtype=torch.int32)
    _clear_bit(row, 31)
    _clear_bit(row, 64)
    ok = allowed_ids(row, 128).tolist()
    assert 31 not in ok and 64 not in ok and len(ok) == 126
    _clear_from(row, 70)
    assert allowed_ids(row, 128).tolist() == [i for i in range(70) if i not in (31, 64)]


def test_initial_state_from_prompt(tok):
    off = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    opened = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n")
    old_turn = tok.encode("<|im_start|>assistant\n<think>\nx\n</think>\n\ny<|im_end|>\n<|im_start|>assistant\n")
    assert initial_think_state(off, tok) is ThinkState.ANSWER
    assert initial_think_state(on, tok) is ThinkState.START
    assert initial_think_state(opened, tok) is ThinkState.THINKING
    assert initial_think_state(old_turn, tok) is ThinkState.START  # an earlier turn's tags do not count


def test_budget_closing_ends_with_think_end_and_separator(tok):
    ids = budget_closing_ids(tok)
    assert ids[-2] == tok.think_end_id and tok.decode(ids[-1:]) == "\n\n"
    assert "Considering the limited time" in tok.decode(ids[:-2])
