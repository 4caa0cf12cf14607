"""Stored Responses API objects (``store: true``): one row per response, readable only by the key that made it.

The API layer owns the shapes (the response object, its input items, the conversation as items); this stores them
as JSON text beside the ledger. ``conversation`` holds every item of the exchange up to and including this
response's output, so continuing it (``previous_response_id``) is one read however long the chain is.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from qwen3_api.errors import APIError
from qwen3_api.platform.db import Database
from qwen3_api.platform.tables import responses


@dataclass(slots=True)
class StoredResponse:
    """A stored response: the object as served, its own input items, and the whole conversation."""

    id: str
    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


def _unavailable(exc: Exception) -> APIError:
    return APIError(503, f"The response store is temporarily unavailable; retry shortly ({type(exc).__name__}).",
                    "server_error", code="service_unavailable", headers={"Retry-After": "1"})


class ResponseStore:
    """Put / get / delete stored responses, scoped to the key's hash (another key's id reads as missing)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, key_hash: str, stored: StoredResponse) -> None:
        """Insert or replace (a response is written once it has ended; the id is new per response)."""

        def write(conn: Connection) -> None:
            conn.execute(delete(responses).where(responses.c.id == stored.id))
            conn.execute(insert(responses).values(
                id=stored.id, key_hash=key_hash, created_at=datetime.now(UTC),
                body=json.dumps(stored.body, ensure_ascii=False),
                input_items=json.dumps(stored.input_items, ensure_ascii=False),
                conversation=json.dumps(stored.conversation, ensure_ascii=False)))

        try:
            await self.db.run(write)
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None

    async def get(self, key_hash: str, response_id: str) -> StoredResponse | None:
        """The stored response, or None when there is none for this key."""

        def read(conn: Connection) -> Any:
            return conn.execute(select(responses).where(responses.c.id == response_id)).mappings().first()

        try:
            row = await self.db.run(read)
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None
        if row is None or not hmac.compare_digest(row["key_hash"], key_hash):
            return None
        return StoredResponse(id=row["id"], body=json.loads(row["body"]), input_items=json.loads(row["input_items"]),
                              conversation=json.loads(row["conversation"]))

    async def delete(self, key_hash: str, response_id: str) -> bool:
        """Delete this key's response; False when there was none for this key."""

        def remove(conn: Connection) -> int:
            result = conn.execute(delete(responses).where(responses.c.id == response_id,
                                                          responses.c.key_hash == key_hash))
            return int(result.rowcount or 0)

        try:
            return await self.db.run(remove) > 0
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None
