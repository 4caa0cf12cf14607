"""What the admin and self-service ledger routes share: the filter's query parameters, pages, CSV, daily usage.

The admin routes (routes/admin_activity.py) may filter by any key; a key's own routes (routes/key_activity.py)
always filter by the caller's key, whatever the query says. Both read the ledger through
platform/ledger_queries.py after the gateway's pending settlements are written (read-your-writes).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from fastapi.responses import StreamingResponse

from qwen3_api.errors import APIError
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.ledger_queries import (
    GenerationFilter,
    daily_usage,
    days_back,
    iter_generations,
    list_generations,
)
from qwen3_api.platform.tables import MAX_INT

Status = Literal["completed", "cancelled", "error"]
MAX_PAGE = 200
MAX_DAYS = 366
CSV_COLUMNS = ("id", "created_at", "key_id", "key_label", "key_name", "model", "status", "streamed",
               "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "cost", "currency",
               "ttft_ms", "duration_ms")


def _utc(value: datetime | None) -> datetime | None:
    # A time without a zone is read as UTC, the ledger's own zone.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(slots=True)
class GenerationQuery:
    """The filters of ``GET …/generations`` (and its CSV), as query parameters."""

    model: str | None
    status: Status | None
    since: datetime | None
    until: datetime | None
    id: str | None

    def filter(self, key_hash: str | None) -> GenerationFilter:
        since, until = _utc(self.since), _utc(self.until)
        if since is not None and until is not None and since >= until:
            raise APIError(400, "'since' must be before 'until'.", param="since", code="invalid_value")
        return GenerationFilter(key_hash=key_hash, model=self.model, status=self.status, since=since,
                                until=until, id=self.id)


def generation_query(
    model: Annotated[str | None, Query(min_length=1, max_length=200, description="exact model id")] = None,
    status: Annotated[Status | None, Query(description="how the generation ended")] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601; no zone: UTC)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601; no zone: UTC)")] = None,
    id: Annotated[str | None, Query(min_length=1, max_length=100, description="generation id or its start")] = None,
) -> GenerationQuery:
    return GenerationQuery(model=model, status=status, since=since, until=until, id=id)


Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="rows to skip (newest first)")]
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="days back, today (UTC) included")]


async def page_of_generations(gateway: Gateway, where: GenerationFilter, limit: int, offset: int
                              ) -> dict[str, Any]:
    """``{"data": rows, "total", "limit", "offset"}``, the settlements of this replica written first."""
    await gateway.writer.flush()
    rows, total = await gateway.db.run(lambda conn: list_generations(conn, where, limit=limit, offset=offset))
    return {"data": rows, "total": total, "limit": limit, "offset": offset}


async def usage_by_day(gateway: Gateway, days: int, key_hash: str | None) -> dict[str, Any]:
    """Per day and model over the last ``days`` days; ``days`` lists every day, so gaps are zeros, not holes."""
    await gateway.writer.flush()
    start, labels = days_back(days)
    where = GenerationFilter(key_hash=key_hash, since=start)
    rows = await gateway.db.run(lambda conn: daily_usage(conn, where))
    return {"since": start.isoformat(), "days": labels, "data": rows}


def _cell(value: Any) -> Any:
    # A text cell that a spreadsheet would run as a formula (=, +, -, @) is quoted with a leading apostrophe.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_response(gateway: Gateway, where: GenerationFilter, filename: str) -> StreamingResponse:
    """Every matching row as CSV, streamed from one read (a sync iterator: Starlette runs it in a thread)."""

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        with gateway.db.engine.connect() as conn:
            for n, row in enumerate(iter_generations(conn, where), start=1):
                writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
                if n % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})
