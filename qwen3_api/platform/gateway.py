"""The gateway every generation passes through: authenticate → authorize_model → meter (admit → [work] → settle).

The app reaches admission and settlement only through ``Gateway.meter`` (meter.py), which settles exactly once
however the request ends. The HTTP routes over keys and the ledger live in the API (api/routes/admin.py, keys.py).

Hot path cost, chosen so the database is not on the request path (peer pitfalls 23/24):
- ``authenticate``: a dict lookup. Keys are cached ``cache_ttl_s`` (2 s); admin changes made through this
  replica invalidate at once, changes made elsewhere (the CLI, another replica) apply within the TTL.
- ``admit``: the rpm/tpm windows (memory, or one Redis round trip) and, for keys with a credit limit, a hold
  on this replica's credit lease (memory; a database round trip only when the lease runs out, or when the
  replica's heartbeat is stale — see credits.CreditLeases for why the balance still never goes below zero
  across replicas, and replicas.py for how a dead replica's leases are reclaimed).
- ``settle``: prices the usage, then waits for its ledger row and spend to be committed by the group-commit
  writer (ledger_writer.py): one transaction per batch of settlements, never one per token.

``settle`` never raises: once the model has answered, the client gets its answer. A failed write is
retried, then logged loudly and kept in memory for the next batch and for ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from qwen3_api.errors import APIError
from qwen3_api.platform import ledger
from qwen3_api.platform.catalog import CatalogEntry
from qwen3_api.platform.credits import CreditLeases
from qwen3_api.platform.db import Database
from qwen3_api.platform.keys import KeyRecord, KeyStore, hash_key
from qwen3_api.platform.ledger import GenerationRecord
from qwen3_api.platform.ledger_writer import LedgerItem, LedgerWriter
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.pricing import Usage, price, reservation
from qwen3_api.platform.principal import ANONYMOUS_PRINCIPAL, Admission, Principal, bearer_token
from qwen3_api.platform.ratelimit import MemoryRateLimiter, RateDecision, RateLimiter
from qwen3_api.platform.replicas import LeaseLost
from qwen3_api.platform.response_store import ResponseStore

log = logging.getLogger("qwen3_api.platform.gateway")
ADMIN_KEY_ENV = "QWEN3_API_ADMIN_KEY"
CURRENCY_HEADER = "X-Cost-Currency"  # the currency of usage.cost, on every admitted response


def _auth_error(message: str) -> APIError:
    return APIError(401, message, "authentication_error", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def _store_down(exc: Exception) -> APIError:
    log.error("key/ledger database unavailable: %r", exc)
    return APIError(503, "The API key store is temporarily unavailable; retry shortly.", "server_error",
                    code="service_unavailable", headers={"Retry-After": "1"})


class Gateway:
    """Keys, limits, credits and the ledger for one app (see the module docstring for the hot path)."""

    requires_auth = True

    def __init__(self, db: Database, *, limiter: RateLimiter | None = None, cache_ttl_s: float = 2.0,
                 cache_size: int = 10_000, admin_key: str | None = None, settle_attempts: int = 3,
                 lease_factor: int = 8, lease_idle_s: float = 10.0, lease_heartbeat_s: float = 5.0,
                 lease_expiry_s: float = 30.0) -> None:
        self.db = db
        self.keys = KeyStore(db)
        self.limiter: RateLimiter = limiter or MemoryRateLimiter()
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self.admin_key = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV) or None
        self.leases = CreditLeases(db, factor=lease_factor, idle_s=lease_idle_s, heartbeat_s=lease_heartbeat_s,
                                   expiry_s=lease_expiry_s)
        self.writer = LedgerWriter(db, attempts=settle_attempts)
        self.responses = ResponseStore(db)  # stored Responses API objects (store: true), per key
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._sweeper: asyncio.Future[Any] | None = None
        self._closed = False

    # -- keys ---------------------------------------------------------------------------------------
    async def _lookup(self, key_hash: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and now - hit[0] < self.cache_ttl_s:
            return hit[1]
        try:
            record = await asyncio.to_thread(self.keys.get_by_hash, key_hash)
        except SQLAlchemyError as exc:
            raise _store_down(exc) from None
        principal = Principal.from_record(record) if record else None
        self._cache[key_hash] = (now, principal)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return principal

    def invalidate(self, key_hash: str | None = None) -> None:
        """Forget cached keys (one, or all) so an admin change applies to the next request."""
        if key_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(key_hash, None)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of ``Authorization: Bearer sk-…``; 401 when missing, unknown, revoked or expired."""
        token = bearer_token(authorization)
        if token is None:
            raise _auth_error("Missing API key: send it as 'Authorization: Bearer sk-…' "
                              "(create one with `qwen3-api keys create --name NAME`).")
        return await self.authenticate_hash(hash_key(token))

    async def authenticate_hash(self, key_hash: str) -> Principal:
        """``authenticate`` for a key known by its hash (a console session holds the hash, never the key)."""
        principal = await self._lookup(key_hash)
        if principal is None:
            raise _auth_error("Invalid API key.")
        if principal.revoked:
            raise _auth_error("This API key has been revoked.")
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise _auth_error(f"This API key expired at {principal.expires_at.isoformat()}.")
        self._ensure_sweeper()  # from the first request on: heartbeat, reclaim dead replicas, return idle leases
        return principal

    def authorize_model(self, principal: Principal, model_id: str) -> None:
        """403 when the key is restricted to other models."""
        if principal.models is not None and model_id not in principal.models:
            raise APIError(403, f"This API key is not allowed to use the model '{model_id}'.",
                           "permission_error", param="model", code="model_not_allowed")

    # -- admission ----------------------------------------------------------------------------------
    def meter(self, principal: Principal, entry: CatalogEntry, *, prompt_tokens: int, max_tokens: int,
              generation_id: str, streamed: bool, endpoint: str | None = None) -> Meter:
        """The lifecycle of one request: ``async with gateway.meter(...) as m`` admits, and settles exactly once
        on every exit path (meter.py). The only way the app reaches ``admit`` and ``settle``."""
        return Meter(self, principal, entry, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                     generation_id=generation_id, streamed=streamed, endpoint=endpoint)

    async def admit(self, principal: Principal, entry: CatalogEntry, *, prompt_tokens: int, max_tokens: int,
                    generation_id: str) -> Admission:
        """Rate limits (429) then the credit reservation of the request's maximum cost (402)."""
        admission = Admission(principal, entry, generation_id, prompt_tokens, max_tokens)
        tokens = prompt_tokens + max_tokens
        try:
            decision = await self.limiter.acquire(principal.key_hash, generation_id, rpm=principal.rpm,
                                                  tpm=principal.tpm, tokens=tokens)
        except Exception as exc:  # noqa: BLE001 - limits fail open; credits (the database) still hold
            log.error("rate limiter unavailable, admitting %s without rate limits: %r", generation_id, exc)
            decision = RateDecision(True)
        admission.headers = decision.headers() if (principal.rpm or principal.tpm) else {}
        if not decision.allowed:
            if decision.too_large:
                message = (f"Rate limit: this request may use {tokens} tokens (prompt + max_tokens), more than "
                           f"this key's limit of {principal.tpm} tokens per minute; lower max_tokens.")
            elif decision.limited_by == "requests":
                message = (f"Rate limit reached: {principal.rpm} requests per minute for this key. "
                           f"Retry after {admission.headers['Retry-After']} s.")
            else:
                message = (f"Rate limit reached: {principal.tpm} tokens per minute for this key "
                           f"({decision.tokens_used} in use, this request needs {tokens}). "
                           f"Retry after {admission.headers['Retry-After']} s.")
            raise APIError(429, message, "rate_limit_error", code="rate_limit_exceeded", headers=admission.headers)
        admission.headers[CURRENCY_HEADER] = entry.currency
        admission.rate_limited = principal.rpm is not None or principal.tpm is not None
        if principal.has_credit_limit and principal.key_id is not None:
            amount = reservation(entry, prompt_tokens, max_tokens)
            self._ensure_sweeper()
            try:
                lease = await self.leases.hold(principal.key_id, amount)
            except BaseException as exc:
                await self._release_rate(admission)
                if isinstance(exc, (SQLAlchemyError, LeaseLost)):
                    raise _store_down(exc) from None
                raise
            if lease is None:
                await self._release_rate(admission)
                raise APIError(
                    402, f"Insufficient credits: this request may cost up to {amount} {entry.currency} "
                    f"({prompt_tokens} prompt tokens + max_tokens {max_tokens}); top up the key or lower max_tokens.",
                    "insufficient_quota", code="insufficient_credits")
            admission.reserved, admission.lease = amount, lease
        return admission

    async def _release_rate(self, admission: Admission) -> None:
        if admission.rate_limited:
            admission.rate_limited = False
            try:
                await self.limiter.release(admission.principal.key_hash, admission.generation_id)
            except Exception:  # the entry simply ages out of the window
                log.exception("rate-limit release failed for %s", admission.generation_id)

    # -- settlement ---------------------------------------------------------------------------------
    async def settle(self, admission: Admission, usage: Usage, *, status: str, streamed: bool,
                     ttft_s: float | None, duration_s: float, endpoint: str | None = None) -> Decimal:
        """Price ``usage``, write the ledger row and the spend once, release the rest of the reservation.

        ``status``: completed | cancelled (the client went away) | error. A generation that is not completed
        and produced no completion token is free.

        Idempotent per admission (a second call returns the first cost and writes nothing) and never raises.
        """
        if admission.settled:
            return admission.cost if admission.cost is not None else Decimal(0)
        admission.settled = True
        if status not in ledger.STATUSES:
            log.error("settle(%s): unknown status %r recorded as 'error'", admission.generation_id, status)
            status = "error"
        # A request that failed or was abandoned before its first token costs nothing (prompt included).
        free = status != "completed" and usage.completion_tokens == 0
        cost = Decimal(0) if free else price(admission.entry, usage)
        admission.cost = cost
        record = GenerationRecord(
            id=admission.generation_id, key_hash=admission.principal.key_hash, model=admission.entry.id,
            prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens, reasoning_tokens=usage.reasoning_tokens, cost=cost,
            currency=admission.entry.currency, status=status, streamed=streamed, ttft_s=ttft_s,
            duration_s=duration_s, created_at=datetime.now(UTC), endpoint=endpoint,
        )
        key_id = admission.principal.key_id
        release, owner = Decimal(0), None
        if admission.reserved and key_id is not None:
            release = self.leases.consume(key_id, admission.reserved, cost, admission.lease)
            owner = admission.lease.owner if admission.lease is not None else None
            if cost > admission.reserved:  # only an upstream whose prompt outgrew our estimate can do this
                log.warning("generation %s cost %s, more than the %s held for it (key %s)", record.id, cost,
                            admission.reserved, admission.principal.label)
        if admission.rate_limited:
            if isinstance(self.limiter, MemoryRateLimiter):
                self.limiter.adjust_now(admission.principal.key_hash, admission.generation_id, usage.total_tokens)
            else:
                self._spawn(self._adjust_rate(admission, usage.total_tokens))
        # The writer's future is shielded: a client disconnect cancels the request's task (anyio cancels
        # every later await in its scope), but the charge for what was generated is still written, once.
        await self.writer.write(LedgerItem(record, key_id, admission.principal.label, release, owner))
        return cost

    async def _adjust_rate(self, admission: Admission, total_tokens: int) -> None:
        try:
            await self.limiter.adjust(admission.principal.key_hash, admission.generation_id, total_tokens)
        except Exception:  # a limiter hiccup must not cost the client its answer
            log.exception("rate-limit adjustment failed for %s", admission.generation_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_sweeper(self) -> None:
        if not self._closed and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        # The replica's heartbeat, reclaiming dead replicas' leases, and returning leases of idle keys.
        while True:
            await asyncio.sleep(min(1.0, self.leases.idle_s, self.leases.heartbeat_s))
            try:
                await self.leases.maintain()
            except Exception:  # noqa: BLE001 - retried on the next sweep
                log.exception("credit lease maintenance failed")

    # -- self-service -------------------------------------------------------------------------------
    async def get_generation(self, principal: Principal, generation_id: str) -> GenerationRecord:
        """A ledger row, only to the key that made it (404 otherwise, so ids cannot be probed)."""
        try:
            record = self.writer.pending(generation_id) or await self.db.run(
                lambda conn: ledger.get_generation(conn, generation_id))
        except SQLAlchemyError as exc:
            raise _store_down(exc) from None
        if record is None or not hmac.compare_digest(record.key_hash, principal.key_hash):
            raise APIError(404, f"No generation '{generation_id}' for this key.", "not_found_error",
                           param="id", code="generation_not_found")
        return record

    async def key_info(self, principal: Principal) -> dict[str, Any]:
        """The calling key's limits, credit left and usage (OpenRouter's /api/v1/key shape, plus more)."""
        since = datetime.now(UTC) - timedelta(days=1)

        def read(conn: Connection) -> tuple[KeyRecord | None, dict[str, Any]]:
            record = self.keys.get_by_hash(principal.key_hash, conn)
            return record, ledger.usage_since(conn, principal.key_hash, since)

        await self.writer.flush()  # read-your-writes on this replica
        try:
            record, day = await self.db.run(read)
        except SQLAlchemyError as exc:
            raise _store_down(exc) from None
        if record is None:  # the anonymous --no-auth principal
            return {"data": {"label": principal.label, "name": principal.name, "limit": None, "usage": None,
                             "limit_remaining": None, "rate_limit": {"requests_per_minute": None,
                                                                      "tokens_per_minute": None},
                             "models": None, "expires_at": None, "usage_last_24h": day}}
        if principal.key_id is not None:
            # This replica's unused lease is still this key's credit.
            record.reserved -= self.leases.available(principal.key_id)
        view = record.to_dict()
        return {"data": {
            "label": record.label, "name": record.name, "limit": view["credit"], "usage": view["spent"],
            "reserved": view["reserved"], "limit_remaining": view["credit_left"],
            "rate_limit": {"requests_per_minute": record.rpm, "tokens_per_minute": record.tpm},
            "models": record.models, "expires_at": view["expires_at"], "status": view["status"],
            "usage_last_24h": day,
        }}

    def check_admin(self, authorization: str | None) -> None:
        """401/403 unless the bearer token is the admin key ($QWEN3_API_ADMIN_KEY)."""
        if not self.admin_key:
            raise APIError(403, f"The admin API is disabled: set {ADMIN_KEY_ENV} to enable it.",
                           "permission_error", code="admin_disabled")
        token = bearer_token(authorization)
        if token is None or not hmac.compare_digest(token.encode(), self.admin_key.encode()):
            raise _auth_error("Invalid admin key.")

    async def close(self) -> None:
        """Finish settlements, write what is pending, return credit leases, release connections."""
        self._closed = True
        sweeper = self._sweeper
        if sweeper is not None:
            with contextlib.suppress(RuntimeError):  # its event loop may be gone already
                sweeper.cancel()
                if sweeper.get_loop() is asyncio.get_running_loop():
                    # let it finish: a round still running would race the lease returns below
                    await asyncio.gather(sweeper, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.writer.flush()
        try:
            await self.leases.wait_idle()
            await self.leases.retire()
        except Exception:  # noqa: BLE001 - the database is gone; nothing more to do than say so
            log.exception("could not return credit leases at shutdown")
        await self.limiter.close()
        self.db.dispose()

    def sync_state(self) -> None:
        """Commit what is pending and return every unused lease, from outside the event loop (tests, tools)."""
        self.writer.flush_sync()
        self.leases.return_all_sync()


class NoAuthGateway(Gateway):
    """``--no-auth``: everyone is the anonymous principal; no limits, but usage is still priced and recorded."""

    requires_auth = False

    async def authenticate(self, authorization: str | None) -> Principal:
        return ANONYMOUS_PRINCIPAL

    def authorize_model(self, principal: Principal, model_id: str) -> None:
        return None

    async def admit(self, principal: Principal, entry: CatalogEntry, *, prompt_tokens: int, max_tokens: int,
                    generation_id: str) -> Admission:
        return Admission(principal, entry, generation_id, prompt_tokens, max_tokens,
                         headers={CURRENCY_HEADER: entry.currency})
