"""How `qwen3-api serve` builds the platform: the catalog and the Gateway its options (options.py) describe."""

from __future__ import annotations

import argparse
import logging

from qwen3_api.errors import StartupError
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database, default_database_url
from qwen3_api.platform.gateway import Gateway, NoAuthGateway
from qwen3_api.platform.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

log = logging.getLogger("qwen3_api.platform")


def load_catalog(args: argparse.Namespace) -> Catalog:
    """The catalog named by --catalog, or the built-in one (a missing or malformed file: StartupError)."""
    path = getattr(args, "catalog", None)
    try:
        return Catalog.load(path)
    except (OSError, ValueError) as exc:
        raise StartupError(f"--catalog {path}: {exc}") from None


def build_limiter(redis_url: str | None) -> RateLimiter:
    """Redis-backed when a URL is given (checked now, so a typo fails at start-up), else in-process."""
    if not redis_url:
        return MemoryRateLimiter()
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
    except (redis.RedisError, ValueError) as exc:  # ValueError: not a redis:// / rediss:// / unix:// URL
        raise StartupError(f"--redis-url {_without_password(redis_url)}: cannot reach Redis ({exc})") from None
    return RedisRateLimiter(redis_url)


def _without_password(url: str) -> str:
    """``url`` as it may be printed: a password in it becomes ``***``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        return url
    return parts._replace(netloc=netloc).geturl()


def build_gateway(args: argparse.Namespace) -> Gateway:
    """Open (and migrate) the database, pick the rate limiter, and return the Gateway for `serve`."""
    db = Database(getattr(args, "database_url", None) or default_database_url())
    db.upgrade()
    if getattr(args, "no_auth", False):
        log.warning("--no-auth: every request is accepted without an API key (usage is still recorded)")
        return NoAuthGateway(db)
    heartbeat_s, expiry_s = getattr(args, "lease_heartbeat_s", 5.0), getattr(args, "lease_expiry_s", 30.0)
    if expiry_s < 2 * heartbeat_s:
        raise StartupError(f"--lease-expiry-s {expiry_s} must be at least twice --lease-heartbeat-s {heartbeat_s}")
    gateway = Gateway(db, limiter=build_limiter(getattr(args, "redis_url", None)), lease_heartbeat_s=heartbeat_s,
                      lease_expiry_s=expiry_s)
    # Credit stranded by replicas that died (kill -9, lost host) is usable again before the first request.
    gateway.leases.reclaim_sync()
    if not gateway.keys.list(include_revoked=False):
        log.warning("no API keys yet: every request will get 401. Create one with "
                    "`qwen3-api keys create --name me%s`", f" --database-url {args.database_url}"
                    if getattr(args, "database_url", None) else "")
    return gateway
