"""The real `qwen3-api` command on an operator's typical mistakes: one `qwen3-api: error:` line, exit 2, no
traceback, and for `serve` before the model loads (``--model`` names nothing: reaching it would be a model
error instead)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.platform.helpers import postgres_reachable, unreachable

DEAD_PG = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test"  # nothing listens on port 1


def qwen3_api(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QWEN3_API_HOME": str(tmp_path / "home"), "QWEN3_API_CACHE": str(tmp_path / "cache")}
    env.pop("QWEN3_API_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "qwen3_api.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qwen3-api: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def serve(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return qwen3_api(tmp_path, "serve", "--model", str(tmp_path / "no-such-model"), *argv)


@pytest.mark.parametrize(("flags", "expected"), [
    (["--database-url", DEAD_PG], ["database postgresql+psycopg://postgres:***@127.0.0.1:1/test:",
                                   "Connection refused"]),
    (["--database-url", "sqlite:///{tmp}/missing/dir/q.db"], ["missing/dir does not exist"]),
    (["--database-url", "not a url"], ["is not a database URL"]),
    (["--database-url", "postgres://u@h/db"], ["unknown database kind 'postgres'"]),
    (["--redis-url", "redis://127.0.0.1:1/0"], ["--redis-url redis://127.0.0.1:1/0: cannot reach Redis"]),
    (["--catalog", "{tmp}/none.toml"], ["--catalog", "none.toml"]),
    (["--gpu-memory-utilization", "2"], ["gpu_memory_utilization must be in (0, 1]"]),
])
def test_serve_reports_setup_mistakes_in_one_line_before_the_model(tmp_path: Path, flags: list[str],
                                                                   expected: list[str]) -> None:
    started = time.monotonic()
    proc = serve(tmp_path, "--database-url", f"sqlite:///{tmp_path / 'ok.db'}",
                 *[f.format(tmp=tmp_path) for f in flags])
    line = assert_one_error_line(proc, *expected)
    assert "hunter2" not in proc.stderr and "no-such-model" not in line
    assert time.monotonic() - started < 30  # no model load, no torch import


def test_serve_reports_a_busy_port_before_the_model(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = serve(tmp_path, "--no-auth", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'q.db'}")
    assert_one_error_line(proc, f"cannot listen on 127.0.0.1:{port}", "in use", "--port")


def test_the_default_database_location_is_created_but_an_explicit_missing_folder_is_not(tmp_path: Path) -> None:
    ok = qwen3_api(tmp_path, "keys", "list")  # default: $QWEN3_API_HOME/qwen3-api.db, folder made on demand
    assert ok.returncode == 0 and (tmp_path / "home" / "qwen3-api.db").exists(), ok.stderr
    bad = qwen3_api(tmp_path, "keys", "list", "--database-url", f"sqlite:///{tmp_path / 'nope' / 'k.db'}")
    assert_one_error_line(bad, "nope does not exist")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("argv", [["keys", "create", "--name", "x"], ["keys", "list"], ["usage"]])
def test_keys_and_usage_report_a_bad_database_url_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    assert_one_error_line(qwen3_api(tmp_path, *argv, "--database-url", DEAD_PG), "Connection refused")
    assert_one_error_line(qwen3_api(tmp_path, *argv, "--database-url", "mysql://u@h/db"),
                          "driver is not installed")


def test_a_missing_postgres_database_is_named(tmp_path: Path) -> None:
    if not postgres_reachable():
        unreachable("PostgreSQL not reachable")  # a skip on a laptop, a failure in CI
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/qwen3_api_no_such_db"
    assert_one_error_line(qwen3_api(tmp_path, "keys", "list", "--database-url", url), "does not exist")
