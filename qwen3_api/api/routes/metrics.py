"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qwen3_api.api.deps import StateDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    """Request counts by status, token counters, TTFT / ITL histograms and the engine's load."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
