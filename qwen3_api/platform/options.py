"""The platform's command-line options, kept free of heavy imports so every `--help` answers at once."""

from __future__ import annotations

import argparse


def add_database_arg(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, shared by `serve`, `keys ...` and `usage`."""
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL of the keys/ledger database (default: $QWEN3_API_DATABASE_URL or "
                             "a SQLite file in $QWEN3_API_HOME or ~/.local/share/qwen3-api; for several "
                             "replicas use postgresql+psycopg://user@host/db)")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """The platform's `serve` options: --database-url, --redis-url, --no-auth, --catalog."""
    group = parser.add_argument_group("platform (keys, billing, limits)")
    add_database_arg(group)  # type: ignore[arg-type]
    group.add_argument("--redis-url", default=None,
                       help="share rate limits across replicas through this Redis, e.g. redis://host:6379/0 "
                            "(default: in-process limits)")
    group.add_argument("--no-auth", action="store_true",
                       help="local development: no API keys required (usage is still priced and recorded)")
    group.add_argument("--catalog", default=None,
                       help="model catalog file, TOML or YAML (default: the built-in catalog)")
    group.add_argument("--lease-heartbeat-s", type=_positive_seconds, default=5.0,
                       help="how often this replica proves it is alive to the database, which keeps its credit "
                            "leases its own (default: 5)")
    group.add_argument("--lease-expiry-s", type=_positive_seconds, default=30.0,
                       help="a replica silent this long is dead: any other replica (and any starting one) "
                            "returns its credit leases to the keys; at least twice the heartbeat (default: 30)")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value
