"""Grammars for structured output and tool calls, compiled with llguidance.

Why llguidance rather than xgrammar: its Rust core computes a token mask in tens of microseconds with a lazy lexer
and token-trie walk, so masks need no precompilation step per schema (xgrammar compiles each grammar up front, which
is a cost paid per request for per-request schemas); its JSON-schema support is the widest of the two ($defs/$ref,
anyOf/oneOf, additionalProperties, pattern, min/max lengths, enum/const), which is what ``client.chat.completions
.parse()`` sends; Lark grammars can name special tokens by id (``<[151657]>``), which the ``<tool_call>`` grammar
needs; and it is the engine behind OpenAI's own structured outputs and used by vLLM, SGLang and llama.cpp.

Every grammar here describes only the answer: the constraint object (chat/constraint.py) applies it after
``</think>``, so the reasoning stays free. JSON is generated compact-but-spaced (``", "`` and ``": "``), the
separators the model saw in its training data and in the tool-call examples of its template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import llguidance

from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.errors import invalid

_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(slots=True)
class Grammar:
    """A compiled, validated grammar and a prototype matcher to copy for each sequence."""

    source: str
    prototype: llguidance.LLMatcher

    def new_matcher(self) -> llguidance.LLMatcher:
        """A fresh matcher at the start of the grammar (a cheap copy of the prototype)."""
        return self.prototype.deep_copy()


def compile_grammar(tok: ChatTokenizer, grammar: str, param: str) -> Grammar:
    """Validate and compile; a bad grammar or schema is the client's error (400 naming ``param``)."""
    llt = tok.llg_tokenizer
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, llt)
    if is_error:
        raise invalid(f"unsupported schema or grammar: {messages[0] if messages else 'invalid'}", param)
    matcher = llguidance.LLMatcher(llt, grammar, log_level=0)
    if matcher.is_error():
        raise invalid(f"unsupported schema or grammar: {matcher.get_error()}", param)
    return Grammar(grammar, matcher)


def _with_options(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-guidance": {**_JSON_OPTIONS, **schema.get("x-guidance", {})}}


def json_schema_grammar(tok: ChatTokenizer, schema: dict[str, Any] | None, param: str = "response_format") -> Grammar:
    """``response_format`` json_schema (or json_object when ``schema`` is None: any JSON object)."""
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise invalid("json_schema.schema must be an object", param)
    try:
        source = llguidance.LLMatcher.grammar_from_json_schema(_with_options(schema))
    except ValueError as e:
        raise invalid(f"invalid JSON schema: {e}", param) from e
    return compile_grammar(tok, source, param)


def response_format_grammar(tok: ChatTokenizer, response_format: dict[str, Any] | None) -> Grammar | None:
    """The grammar for an OpenAI ``response_format`` (None for text)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json_schema_grammar(tok, None)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise invalid("response_format.json_schema must be an object with a schema", "response_format")
        return json_schema_grammar(tok, spec.get("schema", {}), "response_format.json_schema.schema")
    raise invalid(f"unknown response_format type {kind!r}", "response_format.type")


def tool_function(tool: dict[str, Any]) -> dict[str, Any]:
    """The ``function`` object of an OpenAI tool (accepts the bare function too)."""
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """JSON schema of one ``{"name": ..., "arguments": ...}`` object for this tool."""
    fn = tool_function(tool)
    params = fn.get("parameters") or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _call_body(tok: ChatTokenizer, tools: list[dict[str, Any]], param: str) -> str:
    schemas = []
    for tool in tools:
        schema = _with_options(call_schema(tool))
        try:
            source = llguidance.LLMatcher.grammar_from_json_schema(schema)
            unusable = bool(llguidance.LLMatcher.validate_grammar(source, tok.llg_tokenizer))
        except ValueError:  # a schema llguidance cannot even read (an integer past 64 bits, ...)
            unusable = True
        if unusable:
            if tool_function(tool).get("strict"):
                raise invalid(f"strict tool {tool_function(tool)['name']!r} has an unsupported schema", param)
            # A non-strict tool with a schema llguidance cannot compile still gets a well-formed call.
            schema = _with_options({**call_schema(tool), "properties": {
                "name": {"const": tool_function(tool)["name"]}, "arguments": {"type": "object"}}})
        schemas.append(schema)
    body = schemas[0] if len(schemas) == 1 else {"anyOf": schemas, "x-guidance": _JSON_OPTIONS}
    return "%json " + json.dumps(body, ensure_ascii=False)


def _special(tid: int | None, what: str) -> str:
    if tid is None:
        raise invalid(f"this model's tokenizer has no {what} token: tool calls cannot be constrained", "tools")
    return f"<[{tid}]>"


def tool_calls_grammar(
    tok: ChatTokenizer, tools: list[dict[str, Any]], *, parallel: bool = True, param: str = "tool_choice"
) -> Grammar:
    """One (or, when ``parallel``, one or more) ``<tool_call>`` blocks calling the given tools, nothing else.

    The block layout is the template's: ``<tool_call>\\n{json}\\n</tool_call>``, calls separated by "\\n".
    """
    if not tools:
        raise invalid("tool_choice requires tools", param)
    open_, close = _special(tok.tool_call_start_id, "<tool_call>"), _special(tok.tool_call_end_id, "</tool_call>")
    start = 'start: call ("\\n" call)*' if parallel else "start: call"
    lark = f'{start}\ncall: {open_} "\\n" body "\\n" {close}\nbody: {_call_body(tok, tools, param)}\n'
    return compile_grammar(tok, llguidance.LLMatcher.grammar_from_lark(lark), param)


def tool_block_grammar(tok: ChatTokenizer, tools: list[dict[str, Any]]) -> Grammar:
    """The inside of one block after the model opened ``<tool_call>``: strict tools in ``auto`` mode."""
    close = _special(tok.tool_call_end_id, "</tool_call>")
    lark = f'start: "\\n" body "\\n" {close}\nbody: {_call_body(tok, tools, "tools")}\n'
    return compile_grammar(tok, llguidance.LLMatcher.grammar_from_lark(lark), "tools")
