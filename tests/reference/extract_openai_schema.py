"""Cut the Responses API's part out of OpenAI's published OpenAPI spec as one JSON Schema file (test data).

    python tests/reference/extract_openai_schema.py openapi.json > tests/reference/openai-responses-schema.json

Source: ``openapi.json`` of github.com/openai/openai-openapi at commit f85dbe223d40e1a31cba812ab2d755c7e98a92a3 (the
commit shared/reference/openai-chat-schema.json came from). ``$defs`` holds the transitive closure of ROOTS; the
conversion is the one that file's README describes: ``#/components/schemas/X`` becomes ``#/$defs/X`` and the
``x-*`` vendor keys are dropped (this spec is OpenAPI 3.1: its ``nullable`` is already ``type: [T, "null"]``);
draft 2019-09's ``$recursiveAnchor`` / ``$recursiveRef`` (one filter that nests itself) become a plain ``$ref``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ROOTS = ["Response", "ResponseStreamEvent", "CreateResponse", "ResponseItemList", "ErrorResponse",
         "TokenCountsResource"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            out += _refs(value)
        return out
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _convert(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k.startswith("x-") or k == "$recursiveAnchor":
                continue
            if k == "$recursiveRef":
                out["$ref"] = f"#/$defs/{name}"
            else:
                out[k] = "#/$defs/" + v.rsplit("/", 1)[-1] if k == "$ref" else _convert(v, name)
        return out
    if isinstance(node, list):
        return [_convert(v, name) for v in node]
    return node


def main(path: str) -> None:
    schemas = json.load(open(path))["components"]["schemas"]
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _refs(schemas[name])
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema",
           "$comment": "OpenAI Responses API subset of openai-openapi f85dbe2 (tests/reference/extract_openai_schema.py)",
           "$defs": {name: _convert(schemas[name], name) for name in sorted(seen)}}
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1])
