"""Credit leases that heal after a crash: lease rows, heartbeats and reclaim, with two replicas on one database.

Every test runs on SQLite and PostgreSQL (the ``db``/``db_url`` fixtures) and checks the invariant after
each step: per key, ``reserved`` is the sum of its lease rows and never below zero.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from qwen3_api.errors import APIError
from qwen3_api.platform import cli, replicas
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.credits import CreditLeases, reserve_leased
from qwen3_api.platform.db import Database
from qwen3_api.platform.factory import build_gateway
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.keys import KeyStore
from qwen3_api.platform.pricing import Usage, price
from qwen3_api.platform.replicas import LeaseLost
from qwen3_api.platform.tables import api_keys, credit_leases
from qwen3_api.platform.tables import replicas as replicas_table

ENTRY = Catalog.load().get("qwen/qwen3-30b-a3b")
# A replica silent for 1 s is dead; one that heartbeat within 0.9 s admits from memory (margin for a loaded CI).
FAST = {"heartbeat_s": 0.1, "expiry_s": 1.0}


def leases(db: Database) -> dict[tuple[str, int], Decimal]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(credit_leases.c.replica_id, credit_leases.c.key_id, credit_leases.c.amount))
        return {(r.replica_id, r.key_id): r.amount for r in rows if r.amount}


def live_replicas(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(conn.execute(select(replicas_table.c.id)).scalars())


def check_invariant(db: Database) -> dict[int, Decimal]:
    """Assert reserved == sum of lease rows >= 0 for every key; return reserved per key."""
    with db.engine.connect() as conn:
        reserved = dict(conn.execute(select(api_keys.c.id, api_keys.c.reserved)).all())
        sums = dict(conn.execute(select(credit_leases.c.key_id, func.sum(credit_leases.c.amount))
                                 .group_by(credit_leases.c.key_id)).all())
    for key_id, value in reserved.items():
        assert value >= 0, (key_id, value)
        assert value == Decimal(sums.get(key_id) or 0), (key_id, value, sums.get(key_id))
    return reserved


def silence(db: Database, replica_id: str, seconds: float = 3600) -> None:
    """Make a replica look like it stopped heartbeating ``seconds`` ago (a kill -9, without the wait)."""
    db.run_sync(lambda conn: conn.execute(update(replicas_table).where(replicas_table.c.id == replica_id)
                                          .values(heartbeat=replicas.db_now(conn) - seconds)))


def race(*fns: Callable[[], object]) -> list[object]:
    """Run ``fns`` in threads released together; each one's result, or the exception it raised."""
    barrier, out = threading.Barrier(len(fns)), [None] * len(fns)

    def one(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001 - returned for the test to judge
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_lease_rows_follow_reserved_through_hold_settle_and_return(db: Database) -> None:
    gw = Gateway(db)
    key, rec = gw.keys.create("rows", credit=Decimal("1"))

    async def run() -> None:
        p = await gw.authenticate(f"Bearer {key}")
        adms = [await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id=f"g{i}") for i in range(3)]
        assert leases(db) == {(gw.leases.replica_id, rec.id): check_invariant(db)[rec.id]} and leases(db)
        for a in adms:
            await gw.settle(a, Usage(10, 7), status="completed", streamed=False, ttft_s=None, duration_s=0.1)
            check_invariant(db)
        await gw.leases.return_idle(everything=True)
        assert check_invariant(db)[rec.id] == 0 and leases(db) == {}
        assert gw.leases.replica_id in live_replicas(db)  # returning idle leases keeps the replica
        await gw.close()

    asyncio.run(run())
    assert gw.keys.get(rec.id).spent == 3 * price(ENTRY, Usage(10, 7))
    assert live_replicas(db) == set() and check_invariant(db)[rec.id] == 0  # close removed the replica


def test_a_dead_replicas_lease_is_reclaimed_after_expiry_and_the_credit_is_usable_again(db: Database) -> None:
    _, rec = KeyStore(db).create("k", credit=Decimal("10"))
    a, b = CreditLeases(db, **FAST), CreditLeases(db, **FAST)

    async def run() -> None:
        assert await a.hold(rec.id, Decimal("1"))  # leases 8, then A dies: no more heartbeats
        assert leases(db) == {(a.replica_id, rec.id): Decimal("8")}
        assert await b.hold(rec.id, Decimal("5")) is None  # only 2 left: 402
        await b.maintain()
        assert leases(db) == {(a.replica_id, rec.id): Decimal("8")}  # not silent long enough yet
        await asyncio.sleep(FAST["expiry_s"] + 0.1)
        await b.maintain()  # B's sweeper round: heartbeat, then reclaim the dead
        assert a.replica_id not in live_replicas(db) and b.replica_id in live_replicas(db)
        assert check_invariant(db)[rec.id] == 0
        assert await b.hold(rec.id, Decimal("10"))  # the key's whole credit

    asyncio.run(run())
    assert check_invariant(db)[rec.id] == Decimal("10")


def test_a_heartbeating_replica_keeps_its_lease(db: Database) -> None:
    _, rec = KeyStore(db).create("k", credit=Decimal("10"))
    a, b = CreditLeases(db, **FAST), CreditLeases(db, **FAST)

    async def run() -> None:
        assert await a.hold(rec.id, Decimal("1"))
        for _ in range(15):  # 1.5 s, longer than the expiry, with A's sweeper beating
            await asyncio.sleep(0.1)
            await a.maintain()
            await b.maintain()
        assert leases(db) == {(a.replica_id, rec.id): Decimal("8")}
        assert a.available(rec.id) == Decimal("7")

    asyncio.run(run())


def test_two_replicas_reclaiming_the_same_dead_leases_release_each_once(db_url: str) -> None:
    # Two engines, two threads, released together: on PostgreSQL the transactions really overlap.
    dbs = [Database(db_url), Database(db_url)]
    dbs[0].upgrade()
    store = KeyStore(dbs[0])
    keys = [store.create(f"k{i}", credit=Decimal("100"))[1].id for i in range(3)]
    live = "live:1:x"
    dbs[0].run_sync(lambda conn: replicas.register(conn, live))
    for k in keys:
        assert dbs[0].run_sync(lambda conn, k=k: reserve_leased(conn, live, k, Decimal("1")))
    for round_ in range(6):
        dead = f"dead:{round_}:x"
        dbs[0].run_sync(lambda conn, d=dead: replicas.register(conn, d))
        for k in keys:
            assert dbs[0].run_sync(lambda conn, d=dead, k=k: reserve_leased(conn, d, k, Decimal("2.5")))
        silence(dbs[0], dead)
        found = race(*[lambda i=i, d=dead: dbs[i].run_sync(lambda conn: replicas.reclaim(conn, d, 30.0))
                       for i in range(2)])
        got = sorted((r.key_id, r.amount) for r in found[0] + found[1])
        assert got == [(k, Decimal("2.5")) for k in keys], got  # each lease once, by one of the two
        assert check_invariant(dbs[0]) == dict.fromkeys(keys, Decimal("1"))  # only the live lease is left
    for d in dbs:
        d.dispose()


def test_a_replica_waking_up_while_being_reclaimed_either_keeps_all_or_learns_it_lost_all(db_url: str) -> None:
    dbs = [Database(db_url), Database(db_url)]
    dbs[0].upgrade()
    _, rec = KeyStore(dbs[0]).create("k", credit=Decimal("1000"))
    for round_ in range(8):
        paused = f"paused:{round_}:x"
        dbs[0].run_sync(lambda conn, p=paused: replicas.register(conn, p))
        assert dbs[0].run_sync(lambda conn, p=paused: reserve_leased(conn, p, rec.id, Decimal("3")))
        silence(dbs[0], paused)
        # The paused replica's next lease (heartbeat + reserve, one transaction) against another's reclaim.
        woke, reclaimed = race(
            lambda p=paused: dbs[0].run_sync(lambda conn: reserve_leased(conn, p, rec.id, Decimal("4"))),
            lambda p=paused: dbs[1].run_sync(lambda conn: replicas.reclaim(conn, p, 30.0)))
        held = leases(dbs[0]).get((paused, rec.id), Decimal(0))
        if isinstance(woke, LeaseLost):  # the reclaim won: everything released, and the replica knows
            assert held == 0 and reclaimed and paused not in live_replicas(dbs[0])
        else:  # the heartbeat won: the reclaim re-checked it and took nothing
            assert woke is True and held == 7 and reclaimed == []
            dbs[0].run_sync(lambda conn, p=paused: replicas.reclaim(conn, p, None))
        assert check_invariant(dbs[0])[rec.id] == 0
    for d in dbs:
        d.dispose()


def test_reclaim_never_drives_reserved_below_zero(db: Database) -> None:
    _, rec = KeyStore(db).create("k", credit=Decimal("10"))
    db.run_sync(lambda conn: replicas.register(conn, "dead:1:x"))
    assert db.run_sync(lambda conn: reserve_leased(conn, "dead:1:x", rec.id, Decimal("4")))
    # An operator zeroed reserved by hand (the old reset-reserved) while the lease row was still there.
    db.run_sync(lambda conn: conn.execute(update(api_keys).values(reserved=0)))
    silence(db, "dead:1:x")
    assert [r.amount for r in replicas.reclaim_expired(db, 30.0)] == [Decimal("4")]
    assert KeyStore(db).get(rec.id).reserved == 0 and check_invariant(db)[rec.id] == 0


def test_a_request_settled_after_its_replica_was_reclaimed_is_charged_once_and_reserved_stays_whole(
        db: Database) -> None:
    a, b = (Gateway(db, lease_heartbeat_s=FAST["heartbeat_s"], lease_expiry_s=FAST["expiry_s"]) for _ in "ab")
    key, rec = a.keys.create("paused", credit=Decimal("1"))
    cost = price(ENTRY, Usage(10, 20))

    async def run() -> None:
        p = await a.authenticate(f"Bearer {key}")
        adm = await a.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="before-pause")
        first = a.leases.replica_id
        a._sweeper.cancel()  # A stalls (a long GC or VM pause): no heartbeats
        await asyncio.sleep(FAST["expiry_s"] + 0.2)
        await b.leases.maintain()  # B reclaims A's lease
        assert first not in live_replicas(db) and check_invariant(db)[rec.id] == 0
        qb = await b.authenticate(f"Bearer {key}")
        adm_b = await b.admit(qb, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="on-b")
        reserved_b = check_invariant(db)[rec.id]
        assert reserved_b > 0
        # A wakes up and finishes its request: spend recorded, B's reservation untouched.
        await a.settle(adm, Usage(10, 20), status="completed", streamed=False, ttft_s=None, duration_s=1.0)
        assert check_invariant(db)[rec.id] == reserved_b and a.keys.get(rec.id).spent == cost
        # A's lease is still in its memory, but A must not admit from it: it finds out and leases afresh.
        assert a.leases.available(rec.id) > 0
        adm2 = await a.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="after-pause")
        assert a.leases.replica_id != first and a.leases.replica_id in live_replicas(db)
        assert (a.leases.replica_id, rec.id) in leases(db) and check_invariant(db)[rec.id] > reserved_b
        for gw, adm_ in ((a, adm2), (b, adm_b)):
            await gw.settle(adm_, Usage(10, 20), status="completed", streamed=False, ttft_s=None, duration_s=0.1)
            await gw.close()

    asyncio.run(run())
    after = a.keys.get(rec.id)
    assert (after.spent, after.reserved) == (3 * cost, 0) and leases(db) == {} and live_replicas(db) == set()


def test_a_replica_shut_down_while_its_first_heartbeat_is_in_flight_leaves_no_row(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    register = replicas.register

    def slow_register(conn: Any, replica_id: str) -> None:
        time.sleep(0.4)  # a loaded machine: the INSERT lands after the shutdown began
        register(conn, replica_id)

    monkeypatch.setattr(replicas, "register", slow_register)
    gw = Gateway(db, lease_heartbeat_s=FAST["heartbeat_s"], lease_expiry_s=FAST["expiry_s"])
    key, _ = gw.keys.create("k", credit=Decimal("1"))

    async def run() -> None:
        await gw.authenticate(f"Bearer {key}")  # starts the sweeper; its first round registers the replica
        await asyncio.sleep(FAST["heartbeat_s"] + 0.1)  # that round is inside the slow INSERT now
        await gw.close()  # cancels the sweeper, not the heartbeat it started

    asyncio.run(run())
    assert live_replicas(db) == set() and leases(db) == {}


class Unreachable(Database):
    """The database as seen from a partitioned replica while ``down`` is set."""

    down = False

    def run_sync(self, fn: Any) -> Any:
        if self.down:
            raise OperationalError("SELECT 1", {}, ConnectionError("network unreachable"))
        return super().run_sync(fn)


def test_a_replica_that_cannot_heartbeat_stops_admitting_from_its_lease_until_it_can(db_url: str) -> None:
    db = Unreachable(db_url)
    db.upgrade()
    gw = Gateway(db, lease_heartbeat_s=FAST["heartbeat_s"], lease_expiry_s=FAST["expiry_s"])
    key, _ = gw.keys.create("k", credit=Decimal("1"))

    async def run() -> None:
        p = await gw.authenticate(f"Bearer {key}")
        await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g1")
        db.down = True
        await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g2")  # memory: still provably ours
        await asyncio.sleep(FAST["expiry_s"])  # no heartbeat past expiry - heartbeat: others may reclaim it
        assert gw.leases.available(p.key_id) > 0
        with pytest.raises(APIError) as err:
            await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g3")
        assert err.value.status == 503
        db.down = False
        await gw.admit(p, ENTRY, prompt_tokens=10, max_tokens=20, generation_id="g4")
        await gw.close()

    asyncio.run(run())


def test_start_up_reclaims_dead_replicas_and_refuses_an_expiry_under_two_heartbeats(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    _, rec = KeyStore(db).create("k", credit=Decimal("10"))
    db.run_sync(lambda conn: replicas.register(conn, "killed:1:x"))
    assert db.run_sync(lambda conn: reserve_leased(conn, "killed:1:x", rec.id, Decimal("6")))
    silence(db, "killed:1:x", 31)
    args = argparse.Namespace(database_url=db_url, no_auth=False, redis_url=None, lease_heartbeat_s=5.0,
                              lease_expiry_s=30.0)
    gw = build_gateway(args)
    assert KeyStore(db).get(rec.id).reserved == 0 and leases(db) == {}
    gw.db.dispose()
    from qwen3_api.errors import StartupError

    with pytest.raises(StartupError, match="at least twice"):
        build_gateway(argparse.Namespace(**{**vars(args), "lease_expiry_s": 9.0}))
    db.dispose()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    parser = argparse.ArgumentParser(prog="qwen3-api")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    assert args.func(args) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_reset_reserved_frees_only_what_no_live_lease_holds_unless_forced(db_url: str,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = Database(db_url)
    db.upgrade()
    _, rec = KeyStore(db).create("alice", credit=Decimal("10"))
    for replica, amount in (("live:1:x", "2"), ("dead:2:x", "3")):
        db.run_sync(lambda conn, r=replica: replicas.register(conn, r))
        assert db.run_sync(lambda conn, r=replica, a=amount: reserve_leased(conn, r, rec.id, Decimal(a)))
    silence(db, "dead:2:x")
    from qwen3_api.platform import credits

    assert db.run_sync(lambda conn: credits.reserve(conn, rec.id, Decimal("1")))  # held by no lease (pre-0002)
    out, err = run_cli(capsys, "keys", "reset-reserved", "alice", "--json", "--database-url", db_url)
    assert '"reserved": "2"' in out and "warning: 1 running server(s) hold 2" in err and "reclaimed 3" in err
    assert leases(db) == {("live:1:x", rec.id): Decimal("2")} and check_invariant(db)[rec.id] == 2
    out, err = run_cli(capsys, "keys", "reset-reserved", "alice", "--force", "--json", "--database-url", db_url)
    assert '"reserved": "0"' in out and "reclaimed 2" in err and leases(db) == {}
    with pytest.raises(LeaseLost):  # the forced replica learns it at its next heartbeat
        db.run_sync(lambda conn: replicas.touch(conn, "live:1:x"))
    db.dispose()
