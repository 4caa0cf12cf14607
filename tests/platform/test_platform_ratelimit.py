"""Sliding-window limits: the in-process limiter, the Redis Lua limiter, and two apps sharing one key's limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.ratelimit import MemoryRateLimiter, RedisRateLimiter
from tests.platform.helpers import MODEL, ServerThread, catalog, make_app


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_memory_window_slides_and_reports_when_to_retry() -> None:
    clock = Clock()
    rl = MemoryRateLimiter(clock=clock)

    async def run() -> None:
        assert (await rl.acquire("k", "a", rpm=2, tpm=None, tokens=1)).allowed
        clock.t += 20
        assert (await rl.acquire("k", "b", rpm=2, tpm=None, tokens=1)).allowed
        clock.t += 10
        refused = await rl.acquire("k", "c", rpm=2, tpm=None, tokens=1)
        assert not refused.allowed and refused.limited_by == "requests"
        assert refused.retry_after_s == pytest.approx(30)  # "a" leaves the window at t0 + 60
        assert refused.headers(now=0)["Retry-After"] == "30"
        clock.t += 30.01
        assert (await rl.acquire("k", "c", rpm=2, tpm=None, tokens=1)).allowed
        assert (await rl.acquire("other", "x", rpm=2, tpm=None, tokens=1)).allowed  # per key

    asyncio.run(run())


def test_memory_tokens_adjust_and_release() -> None:
    clock = Clock()
    rl = MemoryRateLimiter(clock=clock)

    async def run() -> None:
        assert (await rl.acquire("k", "a", rpm=None, tpm=100, tokens=60)).allowed
        clock.t += 5
        assert (await rl.acquire("k", "b", rpm=None, tpm=100, tokens=30)).allowed
        refused = await rl.acquire("k", "c", rpm=None, tpm=100, tokens=20)
        assert refused.limited_by == "tokens" and refused.retry_after_s == pytest.approx(55)
        await rl.adjust("k", "a", 10)  # "a" really used 10 tokens
        assert (await rl.acquire("k", "c", rpm=None, tpm=100, tokens=20)).allowed
        await rl.release("k", "c")
        ok = await rl.acquire("k", "d", rpm=None, tpm=100, tokens=60)
        assert ok.allowed and ok.tokens_used == 100
        assert (await rl.acquire("k", "e", rpm=None, tpm=100, tokens=101)).too_large

    asyncio.run(run())


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = f"qwen3-api-test:{uuid.uuid4().hex}:"
    yield p
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=p + "*"):
        r.delete(k)


def test_redis_limiter_matches_the_memory_semantics(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        rl = RedisRateLimiter(redis_url, prefix=prefix)
        try:
            assert (await rl.acquire("k", "a", rpm=3, tpm=100, tokens=60)).allowed
            second = await rl.acquire("k", "b", rpm=3, tpm=100, tokens=30)
            assert second.allowed and second.requests_used == 2 and second.tokens_used == 90
            refused = await rl.acquire("k", "c", rpm=3, tpm=100, tokens=20)
            assert not refused.allowed and refused.limited_by == "tokens" and 59 <= refused.retry_after_s <= 60
            await rl.adjust("k", "a", 10)
            assert (await rl.acquire("k", "c", rpm=3, tpm=100, tokens=20)).allowed
            by_rpm = await rl.acquire("k", "d", rpm=3, tpm=100, tokens=1)
            assert not by_rpm.allowed and by_rpm.limited_by == "requests" and by_rpm.headers()["X-RateLimit-Limit"] == "3"
            await rl.release("k", "c")
            assert (await rl.acquire("k", "d", rpm=3, tpm=100, tokens=1)).allowed
        finally:
            await rl.close()

    asyncio.run(run())


def test_redis_admission_is_atomic_under_a_burst(redis_url: str, prefix: str) -> None:
    async def run() -> int:
        limiters = [RedisRateLimiter(redis_url, prefix=prefix) for _ in range(4)]  # four "replicas"
        try:
            results = await asyncio.gather(*[
                limiters[i % 4].acquire("burst", f"m{i}", rpm=25, tpm=None, tokens=1) for i in range(100)])
            return sum(r.allowed for r in results)
        finally:
            for rl in limiters:
                await rl.close()

    assert asyncio.run(run()) == 25


def test_two_app_instances_share_one_keys_limit_through_redis(db: Database, redis_url: str, prefix: str) -> None:
    key, _ = Gateway(db).keys.create("shared", rpm=4)
    servers = [ServerThread(make_app(Gateway(db, limiter=RedisRateLimiter(redis_url, prefix=prefix)), catalog()))
               for _ in range(2)]
    for s in servers:
        s.start()
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        auth = {"Authorization": f"Bearer {key}"}
        codes = [httpx.post(servers[i % 2].url + "/v1/chat/completions", json=body, headers=auth).status_code
                 for i in range(6)]
        assert codes == [200, 200, 200, 200, 429, 429]
        last = httpx.post(servers[1].url + "/v1/chat/completions", json=body, headers=auth)
        assert last.headers["X-RateLimit-Limit"] == "4" and int(last.headers["Retry-After"]) >= 1
    finally:
        for s in servers:
            s.stop()
