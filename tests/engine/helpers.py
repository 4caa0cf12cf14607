"""Helpers for the engine tests: transformers' greedy reference, block-leak checks, the step loop."""

from __future__ import annotations

from pathlib import Path

import torch

from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.engine.outputs import RequestOutput

TOKENIZER_VOCAB = 151_669  # the real tokenizer; the checkpoint pads to 151,936


class HFGreedy:
    """transformers' greedy continuation of one prompt at a time, memoized (the reference)."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.cache: dict[tuple[tuple[int, ...], int], list[int]] = {}

    def __call__(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        key = (tuple(prompt), max_new_tokens)
        if key not in self.cache:
            with torch.no_grad():
                out = self.model.generate(
                    torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                    max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=0,
                )
            self.cache[key] = out[0, len(prompt):].tolist()
        return self.cache[key]


def assert_no_leaks(engine: LLMEngine) -> None:
    """All blocks free or held only by the prefix cache; no request left behind."""
    assert not engine.requests
    assert not engine.scheduler.running and not engine.scheduler.waiting
    engine.block_manager.check_invariants([])
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def run_to_completion(engine: LLMEngine, max_steps: int = 10_000) -> dict[str, RequestOutput]:
    """Step until every request is done; the final RequestOutput per request id."""
    final = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return final
        for out in engine.step().outputs:
            if out.finished:
                final[out.request_id] = out
    raise AssertionError("the engine did not finish its requests")
