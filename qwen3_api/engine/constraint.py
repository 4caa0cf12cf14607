"""How a higher layer steers sampling (grammars, tool_choice, thinking budget) without the engine knowing it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TokenConstraint(Protocol):
    """One sample's constraint state; the engine calls it once per step, in order."""

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> bool:
        """bitmask: int32 [B, ceil(vocab/32)], row pre-filled with -1 (all allowed). Clear the bits of
        forbidden tokens of this row; return False when this step is unconstrained (row untouched)."""
        ...

    def accept_token(self, token_id: int) -> None:
        """The token the engine sampled for this sample."""
        ...

    def is_finished(self) -> bool:
        """The grammar is complete: the engine finishes the sequence with finish_reason "stop"."""
        ...


def bitmask_width(vocab_size: int) -> int:
    """Number of int32 words that hold one bit per token."""
    return (vocab_size + 31) // 32


def allocate_bitmask(rows: int, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """An all-allowed bitmask (every bit set) of shape [rows, ceil(vocab/32)]."""
    return torch.full((rows, bitmask_width(vocab_size)), -1, dtype=torch.int32, device=device)


_BIT_SHIFTS: dict[torch.device, torch.Tensor] = {}


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """bool [B, vocab_size]: True where the token is allowed (bit i of word j is token 32*j + i)."""
    shifts = _BIT_SHIFTS.get(bitmask.device)
    if shifts is None:
        shifts = _BIT_SHIFTS[bitmask.device] = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(1)[:, :vocab_size].bool()


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set logits [B, V] of forbidden tokens to -inf in place, for all rows at once.

    Tokens beyond the bitmask's width (vocab padding) count as allowed; the sampler masks them separately.
    """
    vocab = min(logits.shape[1], bitmask.shape[1] * 32)
    allowed = unpack_bitmask(bitmask, vocab)
    logits[:, :vocab].masked_fill_(~allowed, float("-inf"))
