"""The tokenizer and chat template a GGUF file carries, as the tokenizer.json / tokenizer_config.json of a
Hugging Face checkpoint, so the chat layer reads them like any other checkpoint's.

llama.cpp's converter stores a byte-level BPE tokenizer as ``tokenizer.ggml.model = "gpt2"``: every token's text
(ids in order, padded to the embedding's rows with ``[PAD{i}]``), each token's type (1 normal, 3 control = the
special added tokens and those that look special, 4 user-defined = the other added tokens, 5 unused), the merges
("a b"), the pre-tokenizer's name (``tokenizer.ggml.pre``: its split regex), the special ids and the chat template.
This is the inverse: the same BPE model, the pre-tokenizer of that name, added tokens from the token types.
A file that embeds the original (``tokenizer.huggingface.json``) is used as is.

The converter marks ``<|fim_prefix|>`` and the other ``<|...|>`` tokens that Qwen's tokenizer does not call special
as control tokens; for the ``qwen2`` pre-tokenizer (Qwen2 / 2.5 / 3) those six are made plain added tokens again,
as in the original. ``--tokenizer DIR`` serves the checkpoint's own tokenizer files instead.
"""

from __future__ import annotations

import json
from typing import Any

from qwen3_api.model.gguf.files import GgufCheckpoint, GgufError

# tokenizer.ggml.pre -> the split regex of that pre-tokenizer (llama.cpp's llama-vocab.cpp, transformers' files)
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {"qwen2": _QWEN2_REGEX, "default": _GPT2_REGEX, "gpt-2": _GPT2_REGEX}
_CONTROL, _USER_DEFINED = 3, 4
# Added tokens of the Qwen2 / Qwen2.5 / Qwen3 vocabulary that Qwen's tokenizer.json does not call special, but the
# converter marks CONTROL because they look like "<|...|>": restored, so skip_special_tokens keeps them as
# transformers does (tests/gguf/test_tokenizer.py checks every added token's flag against the real file).
_QWEN_PLAIN = frozenset({"<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                         "<|file_sep|>"})


def _pre_tokenizer(regex: str) -> dict[str, Any]:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ]}


def tokenizer_json(ckpt: GgufCheckpoint) -> str:
    """The tokenizer as a tokenizer.json document (what ``tokenizers.Tokenizer.from_str`` reads)."""
    embedded = ckpt.get("tokenizer.huggingface.json")
    if embedded:
        return str(embedded)
    name = ckpt.files[0].name
    model = ckpt.get("tokenizer.ggml.model")
    pre = ckpt.get("tokenizer.ggml.pre") or "default"
    if model != "gpt2" or pre not in PRE_TOKENIZERS:
        raise GgufError(
            f"{name}: its tokenizer ({model!r}, pre-tokenizer {pre!r}) cannot be rebuilt here (supported: byte-"
            f"level BPE 'gpt2' with {', '.join(sorted(PRE_TOKENIZERS))}); pass --tokenizer DIR with the "
            "checkpoint's tokenizer.json and tokenizer_config.json"
        )
    tokens: list[str] = ckpt.get("tokenizer.ggml.tokens") or []
    types: list[int] = ckpt.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges: list[str] = ckpt.get("tokenizer.ggml.merges") or []
    if not tokens or len(types) != len(tokens):
        raise GgufError(f"{name}: tokenizer.ggml.tokens / token_type are missing or disagree")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == _CONTROL and not (pre == "qwen2" and t in _QWEN_PLAIN)}
             for i, t in enumerate(tokens) if types[i] in (_CONTROL, _USER_DEFINED)]
    added_ids = {a["id"] for a in added}
    # the BPE vocabulary: every normal token (unused [PAD] rows are not tokens the text can produce)
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == 1 and i not in added_ids}
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": _pre_tokenizer(PRE_TOKENIZERS[pre]),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [m.split(" ", 1) for m in merges]},
    }
    return json.dumps(doc, ensure_ascii=False)


def _text(ckpt: GgufCheckpoint, key: str) -> str | None:
    tid = ckpt.get(key)
    tokens = ckpt.get("tokenizer.ggml.tokens") or []
    return tokens[int(tid)] if tid is not None and 0 <= int(tid) < len(tokens) else None


def tokenizer_config(ckpt: GgufCheckpoint) -> dict[str, Any]:
    """tokenizer_config.json: the chat template and the special tokens' texts (the chat layer's inputs)."""
    template = ckpt.get("tokenizer.chat_template")
    if not template:
        raise GgufError(f"{ckpt.files[0].name} has no chat template (tokenizer.chat_template): pass --tokenizer "
                        "DIR with the checkpoint's tokenizer_config.json")
    add_bos = bool(ckpt.get("tokenizer.ggml.add_bos_token", False))
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": template,
        "eos_token": _text(ckpt, "tokenizer.ggml.eos_token_id"),
        "pad_token": _text(ckpt, "tokenizer.ggml.padding_token_id"),
        # Qwen3 writes bos_token null and never adds it; a file that adds a bos names it
        "bos_token": _text(ckpt, "tokenizer.ggml.bos_token_id") if add_bos else None,
        "add_bos_token": add_bos,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": ckpt.get(f"{ckpt.get('general.architecture')}.context_length"),
    }
