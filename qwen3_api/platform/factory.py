"""How `qwen3-api serve` builds the platform: its command-line options and the Gateway they describe."""

from __future__ import annotations

import argparse
import logging

from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database, default_database_url
from qwen3_api.platform.gateway import Gateway, NoAuthGateway
from qwen3_api.platform.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

log = logging.getLogger("qwen3_api.platform")


def add_database_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL of the keys/ledger database (default: $QWEN3_API_DATABASE_URL or "
                             "a SQLite file in $QWEN3_API_HOME or ~/.local/share/qwen3-api; for several "
                             "replicas use postgresql+psycopg://user@host/db)")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """The platform's `serve` options: --database-url, --redis-url, --no-auth, --catalog."""
    group = parser.add_argument_group("platform (keys, billing, limits)")
    add_database_arg(group)  # type: ignore[arg-type]
    group.add_argument("--redis-url", default=None,
                       help="share rate limits across replicas through this Redis (default: in-process)")
    group.add_argument("--no-auth", action="store_true",
                       help="local development: no API keys required (usage is still priced and recorded)")
    group.add_argument("--catalog", default=None,
                       help="model catalog file, TOML or YAML (default: the built-in catalog)")


def load_catalog(args: argparse.Namespace) -> Catalog:
    """The catalog named by --catalog, or the built-in one."""
    return Catalog.load(getattr(args, "catalog", None))


def build_limiter(redis_url: str | None) -> RateLimiter:
    """Redis-backed when a URL is given (checked now, so a typo fails at start-up), else in-process."""
    if not redis_url:
        return MemoryRateLimiter()
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"--redis-url {redis_url}: cannot reach Redis ({exc})") from None
    return RedisRateLimiter(redis_url)


def build_gateway(args: argparse.Namespace) -> Gateway:
    """Open (and migrate) the database, pick the rate limiter, and return the Gateway for `serve`."""
    db = Database(getattr(args, "database_url", None) or default_database_url())
    db.upgrade()
    if getattr(args, "no_auth", False):
        log.warning("--no-auth: every request is accepted without an API key (usage is still recorded)")
        return NoAuthGateway(db)
    gateway = Gateway(db, limiter=build_limiter(getattr(args, "redis_url", None)))
    if not gateway.keys.list(include_revoked=False):
        log.warning("no API keys yet: every request will get 401. Create one with "
                    "`qwen3-api keys create --name me%s`", f" --database-url {args.database_url}"
                    if getattr(args, "database_url", None) else "")
    return gateway
