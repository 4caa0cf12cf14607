"""Two real servers on one PostgreSQL, one killed with SIGKILL: its stranded credit lease heals by itself.

The survivor reclaims the dead server's lease once its heartbeat is older than ``--lease-expiry-s``, and a
server starting later reclaims the leases of one that died while nobody was running. After each step the
database must hold: per key, reserved == sum of its lease rows, reserved >= 0, and spent == the ledger's sum.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from qwen3_api.demo.tiny import make_tiny_model
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.tables import api_keys, credit_leases, generations, replicas
from tests.e2e.helpers import MODEL, NO_THINK, start_server, stop_server, wait_healthy
from tests.platform.helpers import PG_URL, postgres_reachable, postgres_schema, unreachable

HEARTBEAT_S, EXPIRY_S = 0.5, 3.0
ENTRY = Catalog.load().get(MODEL)
MESSAGES = [{"role": "user", "content": "Say hi."}]

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema, dropped afterwards (skipped without PostgreSQL, failed in CI)."""
    if not postgres_reachable():
        unreachable(f"PostgreSQL not reachable at {PG_URL}")
    with postgres_schema("qwen3_e2e") as url:
        yield url


def keys_cli(url: str, *argv: str) -> str:
    """``qwen3-api keys ARGV --database-url URL``: its stdout (a new key is printed there)."""
    out = subprocess.run([sys.executable, "-m", "qwen3_api.cli", "keys", *argv, "--database-url", url],
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip()


class Server:
    """``qwen3-api serve`` as a child process in its own session (so SIGKILL reaches only it)."""

    def __init__(self, model_dir: Path, url: str, log_path: Path) -> None:
        self.log_path = log_path
        self.proc, self.base = start_server(["--model", str(model_dir), "--database-url", url, "--kv-cache-memory",
                                             "0.01", "--lease-heartbeat-s", str(HEARTBEAT_S), "--lease-expiry-s",
                                             str(EXPIRY_S)], log_path, wait=False)

    def wait_healthy(self, timeout_s: float = 120) -> None:
        wait_healthy(self.proc, self.base, self.log_path, timeout_s)

    def chat(self, key: str, max_tokens: int) -> httpx.Response:
        return httpx.post(self.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, **NO_THINK},
                          timeout=120)

    def stop(self, sig: int = signal.SIGINT) -> None:
        stop_server(self.proc, sig, timeout_s=30)


def state(db: Database, key_id: int) -> dict:
    """The key, its leases and its ledger, after asserting the invariants."""
    with db.engine.connect() as conn:
        key = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().one()
        leases = {r.replica_id: r.amount for r in conn.execute(
            select(credit_leases.c.replica_id, credit_leases.c.amount).where(credit_leases.c.key_id == key_id))
            if r.amount}
        ledger = conn.execute(select(func.coalesce(func.sum(generations.c.cost), 0))
                              .where(generations.c.key_hash == key["key_hash"])).scalar_one()
        alive = set(conn.execute(select(replicas.c.id)).scalars())
    assert key["reserved"] >= 0 and key["reserved"] == sum(leases.values(), Decimal(0)), (key, leases)
    assert key["spent"] == Decimal(ledger), (key["spent"], ledger)
    assert key["credit"] - key["spent"] - key["reserved"] >= 0
    return {"reserved": key["reserved"], "spent": key["spent"], "left": key["credit"] - key["spent"] - key["reserved"],
            "leases": leases, "replicas": alive}


def test_a_killed_servers_lease_is_reclaimed_by_the_survivor_and_at_start_up(
        tmp_path: Path, qwen3_tokenizer_dir: Path, pg_url: str) -> None:
    model_dir = make_tiny_model(tmp_path / "model", tokenizer_dir=qwen3_tokenizer_dir, max_position_embeddings=2048,
                                seed=1)
    probe = keys_cli(pg_url, "create", "--name", "probe")  # no credit limit: tells the prompt's token count
    servers = [Server(model_dir, pg_url, tmp_path / f"server-{name}.log") for name in "ab"]
    db = Database(pg_url)
    try:
        for s in servers:
            s.wait_healthy()
        a, b = servers
        first = a.chat(probe, 16)
        assert first.status_code == 200, first.text
        prompt_tokens = first.json()["usage"]["prompt_tokens"]
        small, big = ENTRY.max_cost(prompt_tokens, 16), ENTRY.max_cost(prompt_tokens, 64)
        credit = 10 * small  # A's first lease takes 8 of these 10 shares; `big` needs more than the 2 left
        assert 2 * small < big <= 5 * small
        key = keys_cli(pg_url, "create", "--name", "metered", "--credit", str(credit))
        key_id = db.run_sync(lambda conn: conn.execute(select(api_keys.c.id).where(api_keys.c.name == "metered"))
                             .scalar_one())

        assert a.chat(key, 16).status_code == 200
        before = state(db, key_id)
        (a_replica, a_lease), = before["leases"].items()
        assert a_lease == 8 * small - before["spent"] and before["left"] == 2 * small

        a.stop(signal.SIGKILL)  # no shutdown: A's lease stays reserved, for now
        killed = time.monotonic()
        refused = b.chat(key, 64)
        assert refused.status_code == 402, refused.text  # within the expiry, the dead lease still counts
        assert state(db, key_id)["leases"] == {a_replica: a_lease}
        while (answer := b.chat(key, 64)).status_code == 402:
            assert time.monotonic() - killed < EXPIRY_S + 20, "the dead server's lease was never reclaimed"
            time.sleep(0.3)
        healed_after = time.monotonic() - killed
        assert answer.status_code == 200, answer.text
        assert healed_after >= EXPIRY_S - HEARTBEAT_S - 0.5  # by expiry, not before
        after = state(db, key_id)
        assert a_replica not in after["leases"] and a_replica not in after["replicas"]
        assert after["spent"] > before["spent"]
        print(f"lease of the killed server reclaimed {healed_after:.1f} s after SIGKILL (expiry {EXPIRY_S} s)")

        # B takes a fresh lease (after a top-up, 8 shares again), then dies too while no other server runs:
        # the next server to start reclaims it before its first request.
        keys_cli(pg_url, "top-up", "metered", str(credit))
        credit *= 2
        assert b.chat(key, 16).status_code == 200
        b_replicas, b_leases = state(db, key_id)["replicas"], state(db, key_id)["leases"]
        assert set(b_leases) <= b_replicas and sum(b_leases.values()) > 6 * small
        b.stop(signal.SIGKILL)
        time.sleep(EXPIRY_S + 0.5)
        c = Server(model_dir, pg_url, tmp_path / "server-c.log")
        servers.append(c)
        c.wait_healthy()
        restarted = state(db, key_id)
        assert restarted["leases"] == {} and not (restarted["replicas"] & b_replicas)
        assert restarted["left"] == credit - restarted["spent"]  # the key's whole credit is usable again
        assert c.chat(key, 64).status_code == 200
        c.stop(signal.SIGINT)  # a clean shutdown returns the lease and removes the replica
        assert c.proc.returncode == 0, c.log_path.read_text()
        final = state(db, key_id)
        assert final["reserved"] == 0 and final["leases"] == {} and final["replicas"] == set()
    finally:
        for s in servers:
            s.stop(signal.SIGKILL)
        db.dispose()
