"""Gateway behaviour that HTTP cannot isolate: exactly-once settlement, ledger write failures, the key cache."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.pricing import Usage, price
from qwen3_api.platform.tables import generations

ENTRY = Catalog.load().get("qwen/qwen3-30b-a3b")


class FlakyDatabase(Database):
    """Fails the next ``failures`` transactions (as a lost connection would)."""

    failures = 0

    def run_sync(self, fn: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database went away")
        return super().run_sync(fn)


def state(gw: Gateway, rec: Any) -> Any:
    """The key as stored, once pending settlements are written and unused credit leases returned."""
    gw.sync_state()
    return gw.keys.get(rec.id)


def count(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(generations)).scalar_one()


def test_settle_is_exactly_once(db: Database) -> None:
    gw = Gateway(db)
    key, rec = gw.keys.create("once", credit=Decimal("1"))

    async def run() -> tuple[Decimal, Decimal]:
        p = await gw.authenticate(f"Bearer {key}")
        adm = await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="gen-once")
        first, second = await asyncio.gather(*[gw.settle(adm, Usage(10, 5), status="completed", streamed=True,
                                                         ttft_s=0.1, duration_s=0.2) for _ in range(2)])
        return first, second

    first, second = asyncio.run(run())
    assert first == second == price(ENTRY, Usage(10, 5))
    assert count(db) == 1 and state(gw, rec).spent == first and state(gw, rec).reserved == 0


def test_a_duplicate_generation_id_is_never_charged_twice(db: Database) -> None:
    gw = Gateway(db)
    key, rec = gw.keys.create("dup", credit=Decimal("1"))

    async def run() -> None:
        p = await gw.authenticate(f"Bearer {key}")
        for _ in range(2):
            adm = await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="same-id")
            await gw.settle(adm, Usage(10, 20), status="completed", streamed=False, ttft_s=None, duration_s=0.1)

    asyncio.run(run())
    after = state(gw, rec)
    assert count(db) == 1 and after.spent == price(ENTRY, Usage(10, 20)) and after.reserved == 0


def test_ledger_write_is_retried_then_kept_and_flushed(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    db = FlakyDatabase(db_url)
    db.upgrade()
    gw = Gateway(db, settle_attempts=2)
    key, rec = gw.keys.create("flaky", credit=Decimal("1"))

    async def run() -> None:
        p = await gw.authenticate(f"Bearer {key}")
        a1 = await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g-retried")
        db.failures = 1  # first attempt fails, the retry succeeds
        assert await gw.settle(a1, Usage(10, 5), status="completed", streamed=False, ttft_s=None, duration_s=0.1)
        assert count(db) == 1
        a2 = await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g-kept")
        db.failures = 5  # every attempt fails: the client still gets its cost, the row waits in memory
        with caplog.at_level(logging.ERROR):
            cost = await gw.settle(a2, Usage(10, 5), status="completed", streamed=False, ttft_s=None, duration_s=0.1)
        assert cost == price(ENTRY, Usage(10, 5)) and count(db) == 1
        assert "LEDGER WRITE FAILED" in caplog.text and key not in caplog.text
        db.failures = 0
        await gw.close()  # flushes what is pending

    asyncio.run(run())
    assert count(db) == 2
    after = state(gw, rec)
    assert after.spent == 2 * price(ENTRY, Usage(10, 5)) and after.reserved == 0


def test_cancelled_settlement_still_writes(db: Database) -> None:
    gw = Gateway(db)
    key, rec = gw.keys.create("cancel", credit=Decimal("1"))

    async def run() -> None:
        p = await gw.authenticate(f"Bearer {key}")
        adm = await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g-cancel")
        task = asyncio.ensure_future(gw.settle(adm, Usage(10, 3), status="cancelled", streamed=True,
                                               ttft_s=0.1, duration_s=0.2))
        await asyncio.sleep(0)
        task.cancel()  # the request's task is torn down mid-settlement (client gone)
        with pytest.raises(asyncio.CancelledError):
            await task
        await gw.close()

    asyncio.run(run())
    assert count(db) == 1 and state(gw, rec).spent == price(ENTRY, Usage(10, 3))


def test_key_cache_is_used_and_invalidated(db: Database) -> None:
    gw = Gateway(db, cache_ttl_s=60)
    key, rec = gw.keys.create("cached")

    async def run() -> None:
        await gw.authenticate(f"Bearer {key}")
        gw.keys.revoke(rec.id)
        await gw.authenticate(f"Bearer {key}")  # still cached (TTL 60 s)
        gw.invalidate(rec.key_hash)
        with pytest.raises(APIError) as err:
            await gw.authenticate(f"Bearer {key}")
        assert err.value.status == 401 and "revoked" in err.value.message
        for header in (None, "", "Basic abc", "Bearer "):
            with pytest.raises(APIError) as missing:
                await gw.authenticate(header)
            assert missing.value.code == "invalid_api_key" and "Missing" in missing.value.message

    asyncio.run(run())


def test_two_replicas_share_a_credit_through_leases_and_never_overspend(db: Database) -> None:
    each = ENTRY.max_cost(10, 20)
    replicas = [Gateway(db), Gateway(db)]
    key, rec = replicas[0].keys.create("shared", credit=each * 10)

    async def run() -> list[bool]:
        async def one(i: int) -> bool:
            gw = replicas[i % 2]
            p = await gw.authenticate(f"Bearer {key}")
            try:
                adm = await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id=f"r{i}")
            except APIError as err:
                assert err.status == 402
                return False
            await asyncio.sleep(0.05)  # all hold at once
            await gw.settle(adm, Usage(10, 20), status="completed", streamed=False, ttft_s=None, duration_s=0.05)
            return True

        return await asyncio.gather(*[one(i) for i in range(30)])

    admitted = asyncio.run(run())
    assert sum(admitted) == 10
    for gw in replicas:
        gw.sync_state()
    after = replicas[0].keys.get(rec.id)
    assert after.spent == each * 10 and after.reserved == 0 and after.credit_left == 0


def test_many_concurrent_holds_on_one_lease_all_succeed_and_idle_leases_return(db: Database) -> None:
    gw = Gateway(db, lease_idle_s=0.2)
    key, rec = gw.keys.create("busy", credit=Decimal("100"))

    async def run() -> Decimal:
        p = await gw.authenticate(f"Bearer {key}")
        adms = await asyncio.gather(*[gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id=f"b{i}")
                                      for i in range(64)])
        await asyncio.gather(*[gw.settle(a, Usage(10, 5), status="completed", streamed=True, ttft_s=None,
                                         duration_s=0.01) for a in adms])
        held = gw.keys.get(rec.id).reserved  # this replica's unused lease, still reserved in the database
        await asyncio.sleep(1.5)  # idle longer than lease_idle_s: the sweeper gives it back
        return held

    held = asyncio.run(run())
    assert held > 0
    after = gw.keys.get(rec.id)
    assert after.reserved == 0 and after.spent == 64 * price(ENTRY, Usage(10, 5))


def test_key_store_down_is_503_not_500_and_redis_down_fails_open(db: Database) -> None:
    from qwen3_api.platform.ratelimit import RedisRateLimiter

    down = Gateway(Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"))

    async def run_down() -> None:
        with pytest.raises(APIError) as err:
            await down.authenticate("Bearer sk-whatever")
        assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"

    asyncio.run(run_down())
    gw = Gateway(db, limiter=RedisRateLimiter("redis://127.0.0.1:1/0"))
    key, _ = gw.keys.create("no-redis", rpm=1)

    async def run_no_redis() -> None:
        p = await gw.authenticate(f"Bearer {key}")
        for i in range(3):  # rpm=1, but the limiter is unreachable: admitted, logged
            adm = await gw.admit(p, ENTRY, prompt_tokens=1, max_tokens=1, generation_id=f"nr{i}")
            await gw.settle(adm, Usage(1, 1), status="completed", streamed=False, ttft_s=None, duration_s=0.01)

    asyncio.run(run_no_redis())
    assert count(db) == 3
