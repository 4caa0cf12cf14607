"""Property-based sweep of the Responses, Messages and tokenizer routes (schemathesis over /openapi.json).

For every body built from the published schema (positive) or its negation (negative): no 5xx, no server error in
a stream, and every 4xx in the route's own dialect (OpenAI's ``{"error": {...}}``, Anthropic's
``{"type": "error", "error": {"type", "message"}}`` on /v1/messages). Refusals of schema-valid bodies are allowed
here: the dialects refuse on purpose what a text model cannot serve (docs/dialects.md), which a schema of the
provider's shape does not say. Derandomized, as tests/api/test_fuzz_schemas.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from anthropic.types.shared import ErrorResponse as AnthropicError
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis.generation.modes import GenerationMode

from qwen3_api.api.app import Settings, create_app
from qwen3_api.api.openapi import ERROR_SCHEMA
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.platform.catalog import Catalog
from tests.api.helpers import FUZZ, FUZZ_EXAMPLES, MODEL, RecordingGateway, ScriptedEngine

OPENAI_ERROR = Draft202012Validator(ERROR_SCHEMA)


@pytest.fixture(scope="module")
def api(qwen3_tokenizer_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    tok = ChatTokenizer.from_dir(qwen3_tokenizer_dir)
    answer = tok.encode("<think>\nHm.\n</think>\n\nHello<|im_end|>")
    app = create_app(ScriptedEngine(lambda *a: answer), Catalog.load(), RecordingGateway(),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, schemathesis.openapi.from_asgi("/openapi.json", app)


def _check(r: Any, path: str, sent: str) -> None:
    assert r.status_code < 500, f"{r.status_code} {r.text[:500]} for {sent}"
    if r.status_code >= 400:
        if path.startswith("/v1/messages"):
            assert AnthropicError.model_validate(r.json()).error.message, sent
        else:
            assert not list(OPENAI_ERROR.iter_errors(r.json())), (r.json(), sent)
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.split("\n"):
            if line.startswith("data: {"):
                event = json.loads(line[len("data: "):])
                assert event.get("type") not in ("error", "response.failed"), f"{event} for {sent}"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/tokenize"])
def test_dialect_schemas(api: tuple[TestClient, Any], path: str, mode: GenerationMode) -> None:
    client, schema = api
    strategy = schema[path]["POST"].as_strategy(generation_mode=mode)

    @settings(FUZZ, max_examples=FUZZ_EXAMPLES or 15)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        body = case.body
        if isinstance(body, dict) and "model" in body and mode.is_positive:
            body["model"] = MODEL  # only the served model gets past routing
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = client.post(path, content=content, headers={"content-type": "application/json"})
        _check(r, path, f"POST {path} {body!r:.1500}")

    run()
