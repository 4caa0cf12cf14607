"""A small byte-level BPE tokenizer in Qwen3's image, trained in a second on a built-in corpus.

Same pre-tokenizer (Qwen2's split regex + byte level), NFC normaliser and decoder as the real tokenizer, and
the same named tokens: <|endoftext|>, <|im_start|>, <|im_end|> as special tokens, the think / tool tags as
added but not special tokens (they survive skip_special_tokens, as in Qwen3). Every byte is in the alphabet,
so any text, Chinese and emoji included, round-trips.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEMO_VOCAB_SIZE = 1536

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.",
    "Hello! How can I help you today? I am a helpful assistant running on a small demo model.",
    "Large language models predict the next token. Tokens are pieces of words, numbers and punctuation.",
    "Please write a short poem about the sea, the wind, and the stars that shine at night.",
    "What is the capital of France? The capital of France is Paris, a city on the river Seine.",
    "Let me think step by step. First, we add the numbers: 12 + 30 = 42. Then we divide by 2 to get 21.",
    "In the morning the weather was cold and cloudy; by the afternoon the sun came out and it was warm.",
    "The function returns a list of integers sorted in ascending order, or an empty list when none match.",
    "Thank you for your question. Here is a summary of the main points, followed by a detailed answer.",
    "Once upon a time there was a little robot who wanted to learn how to paint pictures of flowers.",
    "Error: the request could not be completed because the server is busy. Please try again later.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    'import json\n\ndata = {"name": "Alice", "age": 30}\nprint(json.dumps(data, indent=2))\n',
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}, '
    '"required": ["location"]}',
    '[{"id": 1, "title": "first", "done": true}, {"id": 2, "title": "second", "done": false}, null]',
    '{"temperature": 21.5, "humidity": 0.63, "wind": {"speed": 12, "direction": "NW"}, "ok": true}',
    "你好！我是一个乐于助人的助手。今天天气很好，我们去公园散步吧。",
    "人工智能正在改变世界。语言模型可以回答问题、写代码和翻译文本。",
    "北京是中国的首都。上海是一个国际化的大城市。谢谢你的帮助！",
    "Emoji test: 😀 😂 🎉 👍 🚀 ❤️ 🌍 🐍 — and some accents: café, naïve, résumé, Zürich, São Paulo.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 -1 1e-6 42% $19.99 2025-01-01 12:30:45",
    "Markdown: # Title\n\n- item one\n- item two\n\n**bold** and *italic* and `code`.\n\n| a | b |\n|---|---|\n",
    "The user asked for the weather. I should call the get_weather tool with the city name.",
    "system user assistant tool: the user said hello; the assistant answered; the tool returned a result.",
    "Sure, here is the answer in JSON format as requested by the schema you provided.",
]


def _corpus() -> list[str]:
    # repeated with small variations so common words get merged into whole tokens
    return [f"{line} {line.lower()}" for line in _CORPUS for _ in range(3)]


def train_demo_tokenizer(vocab_size: int = DEMO_VOCAB_SIZE) -> Tokenizer:
    """Train the demo tokenizer; deterministic (same corpus, same trainer, same result)."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return tok


def demo_chat_template() -> str:
    """The demo model's own Jinja chat template (Qwen3's ChatML format)."""
    return resources.files("qwen3_api.demo").joinpath("chat_template.jinja").read_text()


def tokenizer_config(tok: Tokenizer, chat_template: str) -> dict[str, Any]:
    """A tokenizer_config.json shaped like Qwen3's, with added-token ids read from tok."""
    decoder = {}
    for content in SPECIAL_TOKENS + ADDED_TOKENS:
        decoder[str(tok.token_to_id(content))] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": content in SPECIAL_TOKENS,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_demo_tokenizer(out_dir: Path) -> Tokenizer:
    """Train and write tokenizer.json + tokenizer_config.json (with the chat template) into out_dir."""
    tok = train_demo_tokenizer()
    tok.save(str(out_dir / "tokenizer.json"))
    config = tokenizer_config(tok, demo_chat_template())
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return tok
