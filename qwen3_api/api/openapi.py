"""What /openapi.json publishes beyond FastAPI's default: this server's own limits and its real error responses.

The request models say what they can statically (schemas.py); here the app adds what only it knows (``n`` up
to ``max_n``), and replaces the 422 ``HTTPValidationError`` FastAPI documents, which this server never sends,
with the OpenAI-shaped error every 4xx carries (bad input is a 400).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"], "additionalProperties": False,
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def _describe_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["ErrorResponse"] = ERROR_SCHEMA
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                del responses["422"]
                responses.setdefault("400", {"description": "invalid request"})
            for status, response in responses.items():
                if status.startswith("4"):
                    response["content"] = _ERROR_REF


def publish_schema(app: FastAPI, *, max_n: int) -> None:
    """Post-process ``app.openapi()`` once, the first time the schema is asked for."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for name in ("ChatCompletionRequest", "CompletionRequest"):
                n = schema.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {}).get("n")
                if n is not None:
                    n["maximum"] = max_n
            _describe_errors(schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
