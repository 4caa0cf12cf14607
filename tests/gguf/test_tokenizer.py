"""The tokenizer and chat template a GGUF file carries, against the real Qwen3 tokenizer (../shared).

The file is the real tokenizer as llama.cpp's converter writes it: its token list, types and merges match the
converter's own output byte for byte (digests in fixtures/qwen3_vocab_converter.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from tokenizers import Tokenizer

from qwen3_api.chat.template import ChatTemplate
from qwen3_api.model.gguf import prepare
from tests.gguf.helpers import CONVERTER_VOCAB, DENSE_BF16, MOE_Q8_0, converter_vocab, field_digest

TEXTS = [
    "Hello, world! How are you today?",
    "  leading spaces,\ttabs\tand\n\n\nnewlines\r\n",
    "数学是美丽的。日本語のテキスト、한국어 텍스트 🙂🚀 naïve café",
    "don't I'LL we'VE 1234567890 3.14159 -42 1e-9",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nreasoning</think>\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
    "     \n \u00a0 \u3000 mixed whitespace",
    "",
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
    {"role": "user", "content": "And 3+3?"},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def test_the_files_vocabulary_is_the_converters(qwen3_tokenizer_dir: Path) -> None:
    """What write_vocab_gguf writes is what the converter wrote (reading a 151,936-token file back with the gguf
    package takes ~40 s: prepare() below reads it once, and the tests compare what it derived)."""
    want = json.loads(CONVERTER_VOCAB.read_text())["sha256_of_json_value"]
    tokens, types = converter_vocab(qwen3_tokenizer_dir, 151936)
    special = gguf.SpecialVocab(qwen3_tokenizer_dir, load_merges=True)
    assert field_digest(tokens) == want["tokenizer.ggml.tokens"]
    assert field_digest([int(t) for t in types]) == want["tokenizer.ggml.token_type"]
    assert field_digest(special.merges) == want["tokenizer.ggml.merges"]
    assert field_digest(special.chat_template) == want["tokenizer.chat_template"]
    assert field_digest(special.special_token_ids["eos"]) == want["tokenizer.ggml.eos_token_id"]


def test_same_ids_as_the_real_tokenizer(real_vocab: Path, qwen3_tokenizer_dir: Path) -> None:
    ours = Tokenizer.from_file(str(prepare(real_vocab) / "tokenizer.json"))
    real = Tokenizer.from_file(str(qwen3_tokenizer_dir / "tokenizer.json"))
    for text in TEXTS:
        ids = real.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, add_special_tokens=False).ids == ids, text
        assert ours.decode(ids, skip_special_tokens=False) == real.decode(ids, skip_special_tokens=False)
    # every added token, with the same special flag (what skip_special_tokens removes)
    flags = {i: (t.content, t.special) for i, t in ours.get_added_tokens_decoder().items()}
    assert flags == {i: (t.content, t.special) for i, t in real.get_added_tokens_decoder().items()}
    ids = real.encode("".join(TEXTS), add_special_tokens=False).ids
    assert ours.decode(ids, skip_special_tokens=True) == real.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("kwargs", [{"enable_thinking": True}, {"enable_thinking": False}, {"tools": TOOLS}])
def test_same_rendered_chat_template(vocab_templates: tuple[ChatTemplate, ChatTemplate], kwargs: dict) -> None:
    ours, real = vocab_templates
    assert ours.thinking_mode == real.thinking_mode == "switch"
    for messages in (MESSAGES, MESSAGES[:2]):
        assert ours.render(messages, **kwargs) == real.render(messages, **kwargs)
        assert ours.encode(messages, **kwargs) == real.encode(messages, **kwargs)


def test_tokenizer_override(qwen3_tokenizer_dir: Path) -> None:
    """--tokenizer DIR: that directory's tokenizer files instead of the file's."""
    directory = prepare(MOE_Q8_0, tokenizer_dir=qwen3_tokenizer_dir)
    assert (directory / "tokenizer.json").read_bytes() == (qwen3_tokenizer_dir / "tokenizer.json").read_bytes()
    assert directory != prepare(MOE_Q8_0)
    # the fixtures' own (demo) tokenizer and the 2507 template come through from the converter's files
    demo = json.loads((prepare(DENSE_BF16) / "tokenizer_config.json").read_text())
    assert "2507-instruct" in demo["chat_template"]
