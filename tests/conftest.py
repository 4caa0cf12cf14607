"""Shared fixtures: the real Qwen3 tokenizer from ../shared, tiny random checkpoints built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer: $QWEN3_TOKENIZER_DIR or ../shared/qwen3-tokenizer beside the checkout."""
    env = os.environ.get("QWEN3_TOKENIZER_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "qwen3-tokenizer"
    if not (path / "tokenizer.json").exists():
        raise RuntimeError(f"the real Qwen3 tokenizer is required for the tests: not found at {path}")
    return path


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir() -> Path:
    return tokenizer_dir()
