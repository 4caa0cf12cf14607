"""Incremental detokenization that never emits broken UTF-8.

Byte-level BPE splits one character (a Chinese ideograph, an emoji) over several tokens. Decoding token by token
would print U+FFFD for each piece, so the detokenizer keeps the raw bytes and only releases the longest prefix that
is complete UTF-8; an incomplete tail (at most 3 bytes) waits for the next token. Bytes that can never become valid
UTF-8 are released as U+FFFD, as the tokenizer's own ``errors="replace"`` decode does.
"""

from __future__ import annotations

from qwen3_api.chat.tokens import ChatTokenizer


def _incomplete_tail(buf: bytes) -> int:
    # Length of a trailing, still-completable UTF-8 sequence (0 when the buffer ends on a boundary).
    for back in range(1, min(4, len(buf)) + 1):
        b = buf[-back]
        if b & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return back if need > back else 0
    return 0


class IncrementalDetokenizer:
    """Feed token ids, get text. Special tokens (``<|im_end|>`` ...) are skipped unless asked for."""

    def __init__(self, tokenizer: ChatTokenizer, skip_special_tokens: bool = True) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._pending = b""

    def feed(self, token_id: int) -> str:
        """The text that became complete with this token (maybe empty)."""
        if self._skip and token_id in self._tok.special_ids:
            return ""
        return self.feed_bytes(self._tok.bytes_of(token_id))

    def feed_bytes(self, data: bytes) -> str:
        """Add raw bytes; return the complete UTF-8 text they finish."""
        buf = self._pending + data
        keep = _incomplete_tail(buf)
        self._pending = buf[len(buf) - keep :] if keep else b""
        return buf[: len(buf) - keep].decode("utf-8", errors="replace")

    def flush(self) -> str:
        """End of stream: whatever is still held, with broken bytes replaced."""
        out = self._pending.decode("utf-8", errors="replace")
        self._pending = b""
        return out

    @property
    def has_pending(self) -> bool:
        """True while an incomplete character is held back."""
        return bool(self._pending)
