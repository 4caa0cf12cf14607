"""Helpers for the chat tests: drive a constraint like the engine would, with a seeded random "model" (the test
stand-in for a decode loop); tests/demo uses them on the demo tokenizer."""

from __future__ import annotations

import torch

from qwen3_api.chat.tokens import ChatTokenizer

_SHIFTS = torch.arange(32, dtype=torch.int32)


def allowed_ids(row: torch.Tensor, vocab: int) -> torch.Tensor:
    """Ids whose bit is set in one bitmask row."""
    bits = ((row.unsqueeze(-1) >> _SHIFTS) & 1).flatten()[:vocab]
    return torch.nonzero(bits, as_tuple=False).flatten()


def structural_bias(tok: ChatTokenizer) -> torch.Tensor:
    """+6 logits for short JSON punctuation/digit tokens and the eos, so random strings, arrays and calls close.

    Pure random logits make a JSON string end only when the one closing-quote token is drawn out of ~150k, i.e.
    after ~10^5 tokens; the engine would stop such a walk at max_tokens (finish_reason "length", an unfinished
    JSON prefix as content). The bias keeps the walk short without deciding anything the grammar allows.
    """
    bias = torch.zeros(tok.model_vocab_size)
    for tid in range(tok.vocab_size):
        b = tok.bytes_of(tid)
        if b and len(b) <= 3 and all(c in b'"{}[],: 0123456789' for c in b):
            bias[tid] = 6.0
    if tok.eos_token_id is not None:
        bias[tok.eos_token_id] = 6.0  # ending is as likely as going on, once the grammar allows it
    return bias


def random_walk(constraint, tok: ChatTokenizer, seed: int, max_tokens: int, bias: torch.Tensor | None = None,
                forced_first: list[int] | None = None) -> tuple[list[int], str]:
    """Sample token by token under the constraint; returns (tokens, finish reason "stop"|"length")."""
    gen = torch.Generator().manual_seed(seed)
    bitmask = torch.full((2, (tok.model_vocab_size + 31) // 32), -1, dtype=torch.int32)
    out: list[int] = []
    queue = list(forced_first or [])
    while len(out) < max_tokens:
        if constraint.is_finished():
            return out, "stop"
        bitmask[1].fill_(-1)
        constrained = constraint.fill_bitmask(bitmask, 1)
        logits = torch.randn(tok.model_vocab_size, generator=gen)
        if bias is not None:
            logits = logits + bias
        if queue and constrained and not (bitmask[1, queue[0] // 32] >> (queue[0] % 32)) & 1:
            queue.clear()  # the constraint took over (a budget ran out): the script ends here
        if queue:
            tid = queue.pop(0)
        else:
            ok = allowed_ids(bitmask[1], tok.model_vocab_size)
            assert ok.numel() > 0, "the constraint allowed no token"
            tid = int(ok[torch.argmax(logits[ok])]) if constrained else int(torch.argmax(logits))
        constraint.accept_token(tid)
        out.append(tid)
        if tid in tok.end_token_ids:  # as the engine: <|im_end|> and <|endoftext|> both end the sequence
            return out, "stop"
    return out, "length"
