"""Chat-layer fixtures: the real Qwen3 tokenizer wrapped once per session."""

from __future__ import annotations

import pytest

from qwen3_api.chat.tokens import ChatTokenizer


@pytest.fixture(scope="session")
def tok(qwen3_tokenizer_dir) -> ChatTokenizer:
    return ChatTokenizer.from_dir(qwen3_tokenizer_dir)
