"""Stop strings: never emitted, even when they span tokens.

Text is pushed in pieces; the checker releases what can no longer be part of a stop string and holds back the
longest tail that is a prefix of one, until the next piece decides it. On a match it releases the text before the
match, remembers which stop string matched, and ignores everything after.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StopResult:
    """What one push released, and the stop string if this push completed one."""

    text: str
    matched: str | None = None


class StopChecker:
    """Incremental matcher for a list of stop strings (an empty list passes text straight through)."""

    def __init__(self, stop: str | list[str] | None) -> None:
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        self.stops: list[str] = [s for s in stop if s]
        self._held = ""
        self.matched: str | None = None
        self.released_len = 0  # characters released so far (offsets for aligning logprobs)

    @property
    def done(self) -> bool:
        """True once a stop string has matched: nothing more is released."""
        return self.matched is not None

    def push(self, text: str) -> StopResult:
        """Add text; return what is now safe to emit and the stop string if one just matched."""
        if self.done:
            return StopResult("")
        if not self.stops:
            self.released_len += len(text)
            return StopResult(text)
        buf = self._held + text
        first: tuple[int, str] | None = None
        for s in self.stops:
            at = buf.find(s)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, s)
        if first is not None:
            self.matched = first[1]
            self._held = ""
            out = buf[: first[0]]
            self.released_len += len(out)
            return StopResult(out, first[1])
        keep = self._partial_suffix_len(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        out = buf[: len(buf) - keep]
        self.released_len += len(out)
        return StopResult(out)

    def flush(self) -> str:
        """End of stream without a match: the held text was not a stop string after all."""
        out, self._held = self._held, ""
        self.released_len += len(out)
        return out

    def _partial_suffix_len(self, buf: str) -> int:
        # Longest suffix of buf that is a proper prefix of some stop string.
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best
