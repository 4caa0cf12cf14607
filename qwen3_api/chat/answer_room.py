"""How many tokens a forced answer (a tool call, a JSON object) needs at the least, so a thought can end in time.

With ``tool_choice`` required / named or a ``response_format`` schema and thinking on, the answer must come after
``</think>``. When ``max_tokens`` is near, the constraint closes the thought early enough that the forced part
still fits (chat/constraint.py). The room kept is estimated from the shortest valid answer: the schema's minimal
instance (required properties only, empty strings and arrays, the first enum value...), tokenized, times a safety
factor for what a model writes beyond the minimum.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from qwen3_api.chat.structured import tool_function
from qwen3_api.chat.tokens import ChatTokenizer

# A model rarely writes the shortest answer: keep room for about twice its tokens, and never less than this.
MIN_ROOM = 16
ROOM_FACTOR = 2
# A schema this estimator does not understand (deep $refs, patterns...) gets this much room.
UNKNOWN_ROOM = 64
_MAX_DEPTH = 12


class _Unknown(Exception):
    """The schema is beyond this estimator: fall back to UNKNOWN_ROOM."""


def minimal_instance(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A short value valid for ``schema`` (best effort: raises _Unknown where it cannot tell)."""
    if depth > _MAX_DEPTH or not isinstance(schema, dict):
        if schema is True or schema == {}:
            return None
        raise _Unknown
    defs = defs if defs is not None else {**schema.get("definitions", {}), **schema.get("$defs", {})}
    for key, build in _COMBINATORS:
        if schema.get(key) or (key == "const" and "const" in schema):
            return build(schema, defs, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = "null" if "null" in kind else (kind[0] if kind else None)
    if kind is None and "properties" in schema:
        kind = "object"
    if kind not in _BY_TYPE:
        raise _Unknown
    return _BY_TYPE[kind](schema, defs, depth)


def _ref(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    ref = str(schema["$ref"])
    name = ref.rsplit("/", 1)[-1]
    if not ref.startswith("#/") or name not in defs:
        raise _Unknown
    return minimal_instance(defs[name], defs, depth + 1)


def _shortest(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    options = []
    for option in schema.get("anyOf") or schema.get("oneOf") or []:
        try:
            options.append(minimal_instance(option, defs, depth + 1))
        except _Unknown:
            continue
    if not options:
        raise _Unknown
    return min(options, key=lambda v: len(json.dumps(v)))


def _all_of(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        merged |= part if isinstance(part, dict) else {}
    return minimal_instance(merged, defs, depth + 1)


def _object(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    props = schema.get("properties") or {}
    return {name: minimal_instance(props.get(name, {}), defs, depth + 1) for name in schema.get("required", [])}


def _array(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    item = schema.get("items", {})
    return [minimal_instance(item, defs, depth + 1) for _ in range(int(schema.get("minItems", 0)))]


def _string(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    if "pattern" in schema or "format" in schema:
        raise _Unknown
    return "a" * int(schema.get("minLength", 0))


def _number(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    return 0 if low is None else int(low) + 1


_COMBINATORS: tuple[tuple[str, Callable[[dict[str, Any], dict[str, Any], int], Any]], ...] = (
    ("$ref", _ref),
    ("const", lambda s, d, n: s["const"]),
    ("enum", lambda s, d, n: min(s["enum"], key=lambda v: len(json.dumps(v)))),
    ("anyOf", _shortest),
    ("oneOf", _shortest),
    ("allOf", _all_of),
)
_BY_TYPE: dict[str | None, Callable[[dict[str, Any], dict[str, Any], int], Any]] = {
    "object": _object, "array": _array, "string": _string, "integer": _number, "number": _number,
    "boolean": lambda s, d, n: False, "null": lambda s, d, n: None, None: lambda s, d, n: None,
}


def _dumps(value: Any) -> str:
    # The separators the grammars generate (chat/structured.py): ", " and ": ".
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _room_for(tok: ChatTokenizer, text: str) -> int:
    return max(MIN_ROOM, ROOM_FACTOR * (len(tok.encode(text)) + 1))  # +1: the eos after the answer


def _schema_room(tok: ChatTokenizer, schema: Any, render: Callable[[Any], str] = _dumps) -> int:
    try:
        instance = minimal_instance(schema)
    except (_Unknown, RecursionError, TypeError, ValueError):
        return UNKNOWN_ROOM
    return _room_for(tok, render(instance))


def _call_text(name: str) -> Callable[[Any], str]:
    # The template's tool-call layout, which the tool-call grammar enforces.
    return lambda args: "<tool_call>\n" + _dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def answer_room(tok: ChatTokenizer, *, response_format: dict[str, Any] | None,
                tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> int:
    """Tokens to keep free after the thought for the forced answer of this request."""
    if tool_choice == "required" or isinstance(tool_choice, dict):
        chosen = tools or []
        if isinstance(tool_choice, dict):
            name = (tool_choice.get("function") or {}).get("name")
            chosen = [t for t in chosen if tool_function(t).get("name") == name]
        rooms = []
        for tool in chosen:
            fn = tool_function(tool)
            rooms.append(_schema_room(tok, fn.get("parameters") or {"type": "object"}, _call_text(fn.get("name", ""))))
        return min(rooms) if rooms else UNKNOWN_ROOM
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return _room_for(tok, "{}")
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema") or {}
        return _schema_room(tok, spec.get("schema", {}) if isinstance(spec, dict) else {})
    return 0
