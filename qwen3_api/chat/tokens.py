"""The tokenizer facts the chat layer needs, read once from a model directory.

Every special token id (``<think>``, ``</tool_call>``, the eos ...) is looked up by its text in the tokenizer, never
hard-coded, so a checkpoint with another vocabulary still works. The byte table maps each id to the exact bytes it
stands for (byte-level BPE), which is what the incremental detokenizer and the ``bytes`` field of logprobs need.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte <-> printable-character map that byte-level BPE vocabularies are written in.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


_UNICODE_TO_BYTE = {ch: b for b, ch in _bytes_to_unicode().items()}


class ChatTokenizer:
    """A ``tokenizers.Tokenizer`` plus its tokenizer_config.json: special ids, byte table, chat template."""

    def __init__(self, tokenizer: Tokenizer, config: dict[str, Any], model_vocab_size: int | None = None,
                 end_token_ids: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        # The model's embedding may have more rows than the tokenizer has ids (151,936 vs 151,669 for Qwen3);
        # token masks cover the model vocabulary.
        self.model_vocab_size = max(model_vocab_size or 0, self.vocab_size)
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        self.eos_token: str | None = _token_text(config.get("eos_token"))
        self.eos_token_id = self._require(self.eos_token) if self.eos_token else None
        self.think_start_id = self.token_id("<think>")
        self.think_end_id = self.token_id("</think>")
        self.tool_call_start_id = self.token_id("<tool_call>")
        self.tool_call_end_id = self.token_id("</tool_call>")
        self.im_start_id = self.token_id("<|im_start|>")
        # Every id that ends generation: the tokenizer's eos and the checkpoint's (generation_config.json lists
        # both <|im_end|> and <|endoftext|> for Qwen3). A thought that must lead to a forced answer masks them.
        ends = set(end_token_ids or [])
        if self.eos_token_id is not None:
            ends.add(self.eos_token_id)
        self.end_token_ids: frozenset[int] = frozenset(ends)
        self.token_bytes: list[bytes] = self._build_byte_table(added)

    @classmethod
    def from_dir(cls, path: str | Path, model_vocab_size: int | None = None) -> ChatTokenizer:
        """Load tokenizer.json and tokenizer_config.json from a model (or tokenizer) directory."""
        path = Path(path)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config_path = path / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        model_config = _read_json(path / "config.json")
        if model_vocab_size is None:
            model_vocab_size = model_config.get("vocab_size")
        ends: list[int] = []
        for source in (model_config, _read_json(path / "generation_config.json")):
            value = source.get("eos_token_id")
            ends += [int(v) for v in value] if isinstance(value, list) else [int(value)] if value is not None else []
        return cls(tokenizer, config, model_vocab_size, end_token_ids=ends)

    def token_id(self, text: str) -> int | None:
        """The id of a token written exactly as ``text``, or None when the vocabulary lacks it."""
        return self.tokenizer.token_to_id(text)

    def _require(self, text: str) -> int:
        tid = self.token_id(text)
        if tid is None:
            raise ValueError(f"the tokenizer has no token {text!r}")
        return tid

    def _is_byte_level(self) -> bool:
        if isinstance(self.tokenizer.decoder, decoders.ByteLevel):
            return True
        spec = json.loads(self.tokenizer.to_str()).get("decoder") or {}
        parts = spec.get("decoders", [spec]) if spec.get("type") == "Sequence" else [spec]
        return any(p.get("type") == "ByteLevel" for p in parts)

    def _build_byte_table(self, added: dict[int, Any]) -> list[bytes]:
        table: list[bytes] = [b""] * self.vocab_size
        byte_level = self._is_byte_level()
        for tid in range(self.vocab_size):
            if tid in added:
                table[tid] = added[tid].content.encode("utf-8")
                continue
            if not byte_level:
                # Not byte-level BPE (sentencepiece-style): a token's text is the best we can do; partial
                # characters cannot occur as bytes there anyway.
                table[tid] = self.tokenizer.decode([tid], skip_special_tokens=False).encode("utf-8")
                continue
            piece = self.tokenizer.id_to_token(tid)
            if piece is None:
                continue
            try:
                table[tid] = bytes(_UNICODE_TO_BYTE[c] for c in piece)
            except KeyError:
                table[tid] = piece.encode("utf-8")
        return table

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token text in it becomes the special token (as transformers does)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Plain decode of whole sequences (not incremental)."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def bytes_of(self, token_id: int) -> bytes:
        """The bytes a token stands for (empty for ids outside the tokenizer)."""
        return self.token_bytes[token_id] if 0 <= token_id < self.vocab_size else b""

    def special_tokens_map(self) -> dict[str, Any]:
        """What transformers passes to chat templates as variables: bos_token, eos_token, ... as strings."""
        out: dict[str, Any] = {}
        for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            text = _token_text(self.config.get(key))
            if text is not None:
                out[key] = text
        extra = self.config.get("additional_special_tokens")
        if extra:
            out["additional_special_tokens"] = [_token_text(t) for t in extra]
        return out

    @cached_property
    def llg_tokenizer(self) -> Any:
        """The llguidance tokenizer over the model vocabulary (about a second to build, so built once)."""
        import llguidance

        eos = self.eos_token_id if self.eos_token_id is not None else None
        return llguidance.LLTokenizer(self.tokenizer.to_str(), n_vocab=self.model_vocab_size, eos_token=eos)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json writes special tokens either as strings or as AddedToken dicts.
    if isinstance(value, dict):
        return value.get("content")
    return value
