"""Per-key rate limits: requests and tokens per minute over a sliding window.

Each admitted request is one entry ``(time, tokens)`` in the key's window; it counts for 60 s. Tokens are
counted as OpenAI does at admission (prompt + max_tokens, the most the request can use) and corrected to
the true total at settlement (``adjust``), so a key is neither over-admitted nor starved by unused
``max_tokens``. A request refused later (e.g. for credit) is taken back out (``release``).

``MemoryRateLimiter`` keeps the windows in this process. ``RedisRateLimiter`` keeps them in Redis and
checks-and-adds in one Lua script (atomic: replicas sharing a key cannot both take the last slot), using
Redis' own clock so replicas with skewed clocks agree.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

WINDOW_S = 60.0


@dataclass(slots=True)
class RateDecision:
    """The outcome of one admission: allowed or not, and the numbers for the X-RateLimit-* headers."""

    allowed: bool
    limited_by: str | None = None  # "requests" | "tokens" when refused
    retry_after_s: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    requests_used: int = 0
    tokens_used: int = 0
    reset_s: float = 0.0  # until the oldest entry leaves the window
    too_large: bool = False  # the request alone needs more tokens than the tpm limit

    def headers(self, now: float | None = None) -> dict[str, str]:
        """X-RateLimit-* (the violated limit, or requests when allowed; Reset in epoch ms like OpenRouter)."""
        now = time.time() if now is None else now
        out: dict[str, str] = {}
        if self.rpm is not None:
            out["X-RateLimit-Limit-Requests"] = str(self.rpm)
            out["X-RateLimit-Remaining-Requests"] = str(max(0, self.rpm - self.requests_used))
        if self.tpm is not None:
            out["X-RateLimit-Limit-Tokens"] = str(self.tpm)
            out["X-RateLimit-Remaining-Tokens"] = str(max(0, self.tpm - self.tokens_used))
        which = self.limited_by or ("requests" if self.rpm is not None else "tokens" if self.tpm else None)
        if which is not None:
            out["X-RateLimit-Limit"] = out[f"X-RateLimit-Limit-{which.capitalize()}"]
            out["X-RateLimit-Remaining"] = out[f"X-RateLimit-Remaining-{which.capitalize()}"]
            out["X-RateLimit-Reset"] = str(int((now + self.reset_s) * 1000))
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
            out["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_s * 1000)))
        return out


class RateLimiter(Protocol):
    async def acquire(self, key: str, member: str, *, rpm: int | None, tpm: int | None,
                      tokens: int) -> RateDecision: ...
    async def adjust(self, key: str, member: str, tokens: int) -> None: ...
    async def release(self, key: str, member: str) -> None: ...
    async def close(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    t: float
    tokens: int
    member: str


@dataclass(slots=True)
class _Window:
    entries: deque[_Entry] = field(default_factory=deque)
    by_member: dict[str, _Entry] = field(default_factory=dict)
    tokens: int = 0


class MemoryRateLimiter:
    """Sliding windows in this process (one replica). Runs on the event loop: no awaits inside, so atomic."""

    def __init__(self, window_s: float = WINDOW_S, clock=time.monotonic) -> None:  # noqa: ANN001
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def _expire(self, w: _Window, now: float) -> None:
        while w.entries and w.entries[0].t <= now - self.window_s:
            e = w.entries.popleft()
            w.tokens -= e.tokens
            w.by_member.pop(e.member, None)

    async def acquire(self, key: str, member: str, *, rpm: int | None, tpm: int | None,
                      tokens: int) -> RateDecision:
        if rpm is None and tpm is None:
            return RateDecision(True)
        now = self.clock()
        w = self._windows.setdefault(key, _Window())
        self._expire(w, now)
        count = len(w.entries)
        reset = (w.entries[0].t + self.window_s - now) if w.entries else 0.0
        base = dict(rpm=rpm, tpm=tpm, requests_used=count, tokens_used=w.tokens, reset_s=reset)
        if rpm is not None and count + 1 > rpm:
            return RateDecision(False, "requests", retry_after_s=reset, **base)
        if tpm is not None and w.tokens + tokens > tpm:
            if tokens > tpm:
                return RateDecision(False, "tokens", retry_after_s=self.window_s, too_large=True, **base)
            freed, wait = 0, self.window_s
            for e in w.entries:
                freed += e.tokens
                if w.tokens - freed + tokens <= tpm:
                    wait = e.t + self.window_s - now
                    break
            return RateDecision(False, "tokens", retry_after_s=wait, **base)
        entry = _Entry(now, tokens, member)
        w.entries.append(entry)
        w.by_member[member] = entry
        w.tokens += tokens
        base.update(requests_used=count + 1, tokens_used=w.tokens, reset_s=reset or self.window_s)
        return RateDecision(True, **base)

    async def adjust(self, key: str, member: str, tokens: int) -> None:
        self.adjust_now(key, member, tokens)

    def adjust_now(self, key: str, member: str, tokens: int) -> None:
        """``adjust`` without a coroutine (the gateway calls it inline on settlement)."""
        w = self._windows.get(key)
        entry = w.by_member.get(member) if w else None
        if w is not None and entry is not None:
            w.tokens += tokens - entry.tokens
            entry.tokens = tokens

    async def release(self, key: str, member: str) -> None:
        w = self._windows.get(key)
        entry = w.by_member.pop(member, None) if w else None
        if w is not None and entry is not None:
            w.entries.remove(entry)
            w.tokens -= entry.tokens

    async def close(self) -> None:
        self._windows.clear()


# KEYS: requests zset (member -> ms), tokens hash (member -> tokens).
# ARGV: window_ms, rpm (0 = none), tpm (0 = none), tokens, member.
# Returns {allowed, limited_by (0 none, 1 requests, 2 tokens), count, used, reset_ms, retry_ms}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
for _, m in ipairs(expired) do redis.call('HDEL', KEYS[2], m) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window) end
local count = redis.call('ZCARD', KEYS[1])
local used = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(v) end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #oldest > 0 then reset = tonumber(oldest[2]) + window - now end
if rpm > 0 and count + 1 > rpm then
  return {0, 1, count, used, reset, reset}
end
if tpm > 0 and used + tokens > tpm then
  local wait = window
  if tokens <= tpm then
    local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local freed = 0
    for i = 1, #entries, 2 do
      freed = freed + tonumber(redis.call('HGET', KEYS[2], entries[i]) or '0')
      if used - freed + tokens <= tpm then
        wait = tonumber(entries[i + 1]) + window - now
        break
      end
    end
  end
  return {0, 2, count, used, reset, wait}
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('HSET', KEYS[2], ARGV[5], tokens)
redis.call('PEXPIRE', KEYS[1], window + 1000)
redis.call('PEXPIRE', KEYS[2], window + 1000)
if reset == 0 then reset = window end
return {1, 0, count + 1, used + tokens, reset, 0}
"""

_ADJUST = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class RedisRateLimiter:
    """Sliding windows in Redis, shared by every replica pointing at the same ``url`` and ``prefix``."""

    def __init__(self, url: str, *, prefix: str = "qwen3-api:rl:", window_s: float = WINDOW_S) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url)
        self.prefix = prefix
        self.window_ms = int(window_s * 1000)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._adjust = self.client.register_script(_ADJUST)
        self._release = self.client.register_script(_RELEASE)

    def _keys(self, key: str) -> list[str]:
        # One hash tag so both keys of a window land on the same Redis Cluster slot.
        return [f"{self.prefix}{{{key}}}:req", f"{self.prefix}{{{key}}}:tok"]

    async def acquire(self, key: str, member: str, *, rpm: int | None, tpm: int | None,
                      tokens: int) -> RateDecision:
        if rpm is None and tpm is None:
            return RateDecision(True)
        allowed, which, count, used, reset_ms, retry_ms = await self._acquire(
            keys=self._keys(key), args=[self.window_ms, rpm or 0, tpm or 0, tokens, member])
        return RateDecision(
            bool(allowed), {0: None, 1: "requests", 2: "tokens"}[int(which)], retry_after_s=int(retry_ms) / 1000,
            rpm=rpm, tpm=tpm, requests_used=int(count), tokens_used=int(used), reset_s=int(reset_ms) / 1000,
            too_large=bool(tpm is not None and tokens > tpm),
        )

    async def adjust(self, key: str, member: str, tokens: int) -> None:
        await self._adjust(keys=[self._keys(key)[1]], args=[member, tokens])

    async def release(self, key: str, member: str) -> None:
        await self._release(keys=self._keys(key), args=[member])

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
