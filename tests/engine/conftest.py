"""A tiny random MoE checkpoint (2 layers, hidden 64, 8 experts, the real Qwen3 tokenizer) shared by the
engine tests, transformers' greedy reference for it, and a block-accounting check after every engine test."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.model.loader import load_model
from tests.engine.helpers import TOKENIZER_VOCAB, HFGreedy, assert_no_leaks

  # the real tokenizer; the checkpoint pads to 151,936


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("tiny-moe")
    return make_tiny_model(out, layers=2, hidden=64, experts=8, top_k=2, tokenizer_dir=qwen3_tokenizer_dir,
                           dtype="float32", seed=0)


@pytest.fixture(scope="session")
def tiny_moe(tiny_moe_dir: Path):
    """(model, config) loaded once; engines built on it share the weights."""
    return load_model(tiny_moe_dir, dtype=torch.float32, device="cpu", progress=False)


@pytest.fixture(scope="session")
def hf_greedy(tiny_moe_dir: Path) -> HFGreedy:
    return HFGreedy(tiny_moe_dir)


@pytest.fixture(scope="session")
def prompts16() -> list[list[int]]:
    """16 prompts of 5..300 tokens; prompts 8..15 start with one of two shared 100-token prefixes."""
    rng = random.Random(1234)
    lengths = [5, 300, 17, 64, 33, 250, 9, 128, 120, 180, 140, 210, 160, 101, 290, 131]
    prefixes = [[rng.randrange(TOKENIZER_VOCAB) for _ in range(100)] for _ in range(2)]
    prompts = []
    for i, n in enumerate(lengths):
        if i >= 8:
            prompts.append(prefixes[i % 2] + [rng.randrange(TOKENIZER_VOCAB) for _ in range(n - 100)])
        else:
            prompts.append([rng.randrange(TOKENIZER_VOCAB) for _ in range(n)])
    return prompts


@pytest.fixture
def make_engine(tiny_moe):
    """Build LLMEngines on the shared tiny model; each is checked for leaked blocks at teardown."""
    engines: list[LLMEngine] = []

    def build(num_blocks: int = 256, **kwargs) -> LLMEngine:
        model, config = tiny_moe
        args = EngineArgs(model="tiny", **kwargs)
        engine = LLMEngine(model, config, args, vocab_size=TOKENIZER_VOCAB, num_blocks=num_blocks)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        assert_no_leaks(engine)
