"""When a sample stops: the one place the engine decides "stop" or "length" after a new token (vLLM's
``check_stop``). A caller's abort is the only other way a sample ends (``FinishReason.ABORT``)."""

from __future__ import annotations

from collections.abc import Container

from qwen3_api.engine.outputs import FinishReason
from qwen3_api.engine.sequence import Sequence


def check_stop(
    seq: Sequence, eos_token_ids: Container[int], max_seq_len: int
) -> tuple[FinishReason, int | None] | None:
    """Why ``seq`` ends with the token it just took, as (reason, stop_reason), or None when it runs on.

    In this order: an eos token (unless ignore_eos), a stop token id (its id is the stop_reason), a finished
    grammar, max_tokens, and a sequence that would outgrow the context or the whole KV cache
    (``max_seq_len``).
    """
    token = seq.token_ids[-1]
    params = seq.params
    if not params.ignore_eos and token in eos_token_ids:
        return FinishReason.STOP, None
    if token in params.stop_token_ids:
        return FinishReason.STOP, token
    if seq.constraint is not None and seq.constraint.is_finished():
        return FinishReason.STOP, None
    if params.max_tokens is not None and seq.num_output_tokens >= params.max_tokens:
        return FinishReason.LENGTH, None
    if len(seq) >= max_seq_len:
        return FinishReason.LENGTH, None
    return None
