"""GET /v1/models and /v1/models/{id}: the catalog in OpenAI's list shape plus OpenRouter's fields."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from qwen3_api.api.deps import PrincipalDep, StateDep
from qwen3_api.api.engine_info import engine_precision
from qwen3_api.api.responses import ModelCard, ModelList
from qwen3_api.api.state import AppState
from qwen3_api.platform.catalog import CatalogEntry

router = APIRouter(tags=["models"])
# What the route can see: the router's ``path`` pattern stops at a line break (such a URL is "unknown").
_MODEL_ID = {"pattern": "^[^\\x00-\\x1f\\x7f]*$"}


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: StateDep, _: PrincipalDep) -> ModelList:
    """Every model this server answers for, with context length, pricing and supported parameters."""
    return ModelList(data=[_card(state, e) for e in state.visible_entries()])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(state: StateDep, _: PrincipalDep,
                    model_id: Annotated[str, Path(json_schema_extra=_MODEL_ID)]) -> ModelCard:
    """One model by id (ids contain a slash: ``qwen/qwen3-30b-a3b``); 404 ``model_not_found`` otherwise."""
    return _card(state, state.entry(model_id))


def _card(state: AppState, entry: CatalogEntry) -> ModelCard:
    # Where it runs and at what precision (OpenRouter's endpoint fields): the console's models page shows them.
    local = not entry.is_upstream
    return ModelCard(**entry.to_openai(), hosting="local" if local else "upstream",
                     quantization=engine_precision(state.engine) if local else None)
