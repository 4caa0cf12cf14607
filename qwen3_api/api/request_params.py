"""Request fields -> the engine's SamplingParams, and the completion budget (the context check at the door)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qwen3_api.api.schemas import SamplingFields
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import APIError, invalid

# Defaults taken from the catalog entry's default_parameters when the request leaves the field out.
_DEFAULTABLE = ("temperature", "top_p", "top_k", "min_p", "top_a", "frequency_penalty", "presence_penalty",
                "repetition_penalty")


def completion_budget(req: SamplingFields, limit: int | None, prompt_tokens: int, max_model_len: int,
                      prompt_param: str) -> int:
    """The max_tokens the engine gets: the request's, else what is left of the context.

    Raises the ``context_length_exceeded`` 400 when the prompt plus the requested completion do not fit.
    """
    room = max_model_len - prompt_tokens
    if room < 1:
        raise APIError(400, f"This model's maximum context length is {max_model_len} tokens. However, your "
                       f"prompt has {prompt_tokens} tokens. Please reduce the length of the {prompt_param}.",
                       param=prompt_param, code="context_length_exceeded")
    if limit is None:
        return room
    if prompt_tokens + limit > max_model_len:
        field = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
        raise APIError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                       f"requested {prompt_tokens + limit} tokens ({prompt_tokens} in the {prompt_param}, "
                       f"{limit} for the completion). Please reduce the length of the {prompt_param} or "
                       f"the completion.", param=field, code="context_length_exceeded")
    return limit


def to_sampling_params(req: SamplingFields, *, max_tokens: int, vocab_size: int, defaults: dict[str, Any],
                       logprobs: int | None, stop_token_ids: list[int] | None = None,
                       constraint_factory: Callable[[], Any] | None = None) -> SamplingParams:
    """Map the request onto SamplingParams; a value the engine rejects becomes a 400 naming the field."""
    values: dict[str, Any] = {}
    for name in _DEFAULTABLE:
        value = getattr(req, name)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            values[name] = value
    if values.get("top_p") == 0:
        # OpenAI's schema takes top_p 0 (clients send it for "deterministic"); the engine's nucleus needs
        # p > 0. As p -> 0 the nucleus is the single most likely token: that is top_k 1, so send that.
        values["top_p"] = 1.0
        values["top_k"] = 1
    bias = None
    if req.logit_bias:
        bias = {}
        for key, value in req.logit_bias.items():
            try:
                token = int(key)
            except ValueError:
                raise invalid(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
            if not 0 <= token < vocab_size:
                raise invalid(f"logit_bias token id {token} is outside the vocabulary (0..{vocab_size - 1})",
                              "logit_bias")
            bias[token] = value
    try:
        return SamplingParams(n=req.n, seed=req.seed, max_tokens=max_tokens, logit_bias=bias, logprobs=logprobs,
                              stop_token_ids=list(stop_token_ids or []), constraint_factory=constraint_factory,
                              **values)
    except ValueError as exc:
        message = str(exc)
        param = message.split(" ", 1)[0].split("[", 1)[0]
        raise invalid(message[0].upper() + message[1:] + ".", param) from None
