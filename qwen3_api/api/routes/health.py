"""GET /health: 200 while the engine answers, 503 when it is not running."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from qwen3_api.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    """Liveness and readiness in one: the engine's stats are readable and its loop is alive."""
    try:
        alive = state.engine.is_running
        stats = state.engine.stats()
    except Exception as exc:  # noqa: BLE001 - any failure to read the engine means "not ready"
        return JSONResponse({"status": "error", "detail": str(exc)}, status_code=503)
    if not alive:
        return JSONResponse({"status": "error", "detail": "the engine is not running"}, status_code=503)
    # "demo"/"weights": a probe or an operator can tell the random-weight demo from a real checkpoint.
    return JSONResponse({"status": "ok", "model": state.settings.served_model_name,
                         "demo": state.settings.demo, "weights": "random" if state.settings.demo else "checkpoint",
                         "max_model_len": state.max_model_len, "running": stats.running,
                         "waiting": stats.waiting, "kv_cache_usage": stats.kv_usage})
