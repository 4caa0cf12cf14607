"""Property-based sweep of the published request schemas (schemathesis over /openapi.json, Hypothesis underneath).

For every request the fuzzer builds from the schema (positive) or from its negation (negative):
- no response is a 5xx, and no stream carries a server error;
- every 4xx has the OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``;
- a request the published schema allows is accepted, unless it is refused for a reason no static schema can
  say (``RUNTIME_REFUSALS``: the context window, the vocabulary, a named tool that is not in ``tools``...).

The negative direction (everything the schema forbids is refused) is not required: pydantic's lax coercion
(``"n": "2"``) is accepted on purpose. Examples are derandomized so CI is repeatable; set
``QWEN3_FUZZ_EXAMPLES`` (and ``QWEN3_FUZZ_RANDOM=1``) to sweep longer and wider by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis.generation.modes import GenerationMode

from qwen3_api.api.app import Settings, create_app
from qwen3_api.api.openapi import ERROR_SCHEMA
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from tests.api.helpers import FUZZ, FUZZ_EXAMPLES, MODEL, RecordingGateway, ScriptedEngine

# (status, param prefix, message pattern): what a schema-valid request may still be refused for.
RUNTIME_REFUSALS = [
    (400, ("messages", "prompt", "max_tokens", "max_completion_tokens"), "maximum context length"),
    (400, ("prompt", "logit_bias"), "outside the vocabulary"),        # the served tokenizer's size
    (400, ("tool_choice",), "not in tools"),                          # a cross-reference
    (400, ("tools", "response_format"), "unsupported schema|invalid JSON schema"),  # llguidance's reach
    (400, ("messages",), "chat template rejected"),                   # the checkpoint's template
    (404, ("model",), "does not exist"),                              # /v1/models/{id} with a random id
    (404, (None,), "No API key with id"),                             # admin routes on a random id
    (404, ("key_id",), "No API key with id"),                         # a filter naming a random key
    (400, ("since",), "must be before"),                              # a time window that ends before it starts
    (409, ("name",), "Name taken"),                                   # a live key already has this name
    (400, ("amount",), "largest amount a key can hold"),              # credit + amount past the column
]
ADMIN = {"Authorization": "Bearer adm"}
ERROR = Draft202012Validator(ERROR_SCHEMA)  # the shape /openapi.json publishes for every 4xx


def _runtime_refusal(status: int, err: dict[str, Any]) -> bool:
    param = err.get("param")
    for want_status, prefixes, pattern in RUNTIME_REFUSALS:
        if status == want_status and re.search(pattern, err.get("message", "")) and any(
                (param or "").startswith(p) if p else param is None for p in prefixes):
            return True
    return False


def _send(client: TestClient, case: Any, positive: bool, headers: dict[str, str]) -> Any:
    body = case.body
    kwargs: dict[str, Any] = {"params": case.query or None, "headers": dict(headers)}
    if positive and "key_id" in (case.path_parameters or {}):
        case.path_parameters["key_id"] = 1  # the key the fixture made: past the 404, into the route
    if body.__class__.__name__ != "NotSet":
        if positive and isinstance(body, dict) and "model" in body and case.path.startswith("/v1/"):
            body["model"] = MODEL  # the schema's "any string": only the served model gets past routing
        # json.dumps escapes every non-ASCII character, lone surrogates included, as a client's encoder does.
        kwargs["content"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        kwargs["headers"]["content-type"] = "application/json"
    return client.request(case.method, case.formatted_path, **kwargs)


def _check(r: Any, case: Any, positive: bool) -> None:
    sent = f"{case.method} {case.formatted_path} {case.body!r:.2000}"
    assert r.status_code < 500, f"{r.status_code} {r.text[:500]} for {sent}"
    if r.status_code >= 400:
        body = r.json()
        assert not list(ERROR.iter_errors(body)), (body, sent)
        err = body["error"]
        assert err["message"] and err["type"], (err, sent)
        if positive:
            assert _runtime_refusal(r.status_code, err), f"schema-valid request refused: {err} for {sent}"
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.split("\n"):  # not splitlines(): U+2028 and friends are inside the JSON
            if line.startswith("data: {"):
                event = json.loads(line[len("data: "):])
                assert event.get("error", {}).get("type") != "server_error", f"{event} for {sent}"


@pytest.fixture(scope="module")
def api(qwen3_tokenizer_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    tok = ChatTokenizer.from_dir(qwen3_tokenizer_dir)
    answer = tok.encode("Hello<|im_end|>")
    app = create_app(ScriptedEngine(lambda *a: answer), Catalog.load(), RecordingGateway(),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'platform.db'}")
    db.upgrade()
    app = create_app(ScriptedEngine(lambda *a: [1]), Catalog.load(), Gateway(db, admin_key="adm"),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/admin/keys", json={"name": "seed", "credit": "1"}, headers=ADMIN)  # id 1 exists
        yield client, schemathesis.openapi.from_asgi("/openapi.json", app)
    db.dispose()


def _sweep(client: TestClient, schema: Any, method: str, path: str, mode: GenerationMode, examples: int,
           headers: dict[str, str] | None = None) -> None:
    strategy = schema[path][method].as_strategy(generation_mode=mode)

    @settings(FUZZ, max_examples=FUZZ_EXAMPLES or examples)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        _check(_send(client, case, mode.is_positive, headers or {}), case, mode.is_positive)

    run()


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE


# Sized for ~20 s on two cores: a chat body takes Hypothesis ~0.2 s to build (the schema is large and open).
@pytest.mark.parametrize(("method", "path", "mode", "examples"), [
    ("POST", "/v1/chat/completions", POSITIVE, 60), ("POST", "/v1/chat/completions", NEGATIVE, 30),
    ("POST", "/v1/completions", POSITIVE, 50), ("POST", "/v1/completions", NEGATIVE, 25),
    ("GET", "/v1/models/{model_id}", POSITIVE, 10),  # a free-form path parameter has no negation
], ids=str)
def test_api_schemas(api: tuple[TestClient, Any], method: str, path: str, mode: GenerationMode,
                     examples: int) -> None:
    client, schema = api
    _sweep(client, schema, method, path, mode, examples)


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/admin/keys"), ("PATCH", "/admin/keys/{key_id}"), ("POST", "/admin/keys/{key_id}/top-up"),
    ("GET", "/admin/generations"), ("GET", "/admin/usage/daily"),  # the console's filters, as query parameters
])
def test_admin_schemas(admin_api: tuple[TestClient, Any], method: str, path: str, mode: GenerationMode) -> None:
    client, schema = admin_api
    _sweep(client, schema, method, path, mode, 25, headers=ADMIN)


def test_published_schema_says_what_the_server_refuses(api: tuple[TestClient, Any]) -> None:
    # The two mismatches the soak found, in the schema the clients read (the fuzz above checks the rest).
    client, _ = api
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    message = schemas["ChatMessage"]
    assert {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}} in message["anyOf"]
    assert schemas["ChatCompletionRequest"]["properties"]["n"]["maximum"] == Settings().max_n
    top_p = schemas["ChatCompletionRequest"]["properties"]["top_p"]["anyOf"][0]
    assert top_p["minimum"] == 0 and "exclusiveMinimum" not in top_p  # top_p 0 is served (as greedy)
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "tool", "tool_call_id": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0]"
    # Errors as they are sent: the OpenAI shape for every 4xx, no 422 (never sent) anywhere.
    assert "HTTPValidationError" not in schemas and schemas["ErrorResponse"] == ERROR_SCHEMA
    responses = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in responses
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
