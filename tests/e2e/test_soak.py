"""The mixed-load soak (benchmarks/soak.py) at 200 requests on SQLite and PostgreSQL: every invariant holds.

The full 1,000-request runs and their tables are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform.helpers import PG_URL, postgres_reachable, unreachable

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_soak_200_requests(db: str, tmp_path: Path, qwen3_tokenizer_dir: Path) -> None:
    if db == "postgresql" and not postgres_reachable():
        unreachable(f"PostgreSQL not reachable at {PG_URL}")
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--requests", "200",
                          "--concurrency", "8", "--db", db, "--pg-url", PG_URL, "--tokenizer", str(qwen3_tokenizer_dir),
                          "--json-out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert all(held for _, held, _ in report["verdicts"]), report["verdicts"]
    assert len(report["verdicts"]) == 13 and report["rows"] > 100
