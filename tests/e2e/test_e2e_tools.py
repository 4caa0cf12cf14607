"""Tools, tool_choice, parallel_tool_calls, parse() and json_object against the real server (random weights)."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel

from tests.e2e.helpers import MODEL, NO_THINK, collect_stream, no_tags

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.", "strict": True,
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
                                  "unit": {"type": "string", "enum": ["c", "f"]}}}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "strict": True,
    "parameters": {"type": "object", "additionalProperties": False, "required": ["utc"],
                   "properties": {"utc": {"type": "boolean"}}}}}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _check_calls(calls: list[dict], allowed: set[str]) -> None:
    assert calls
    for call in calls:
        assert call["name"] in allowed
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def _run(client, stream: bool, **kw):  # noqa: ANN001, ANN202
    kw = {"model": MODEL, "messages": ASK, "tools": TOOLS, "max_tokens": 80, "extra_body": NO_THINK, "seed": 11,
          **kw}
    if stream:
        acc = collect_stream(client.chat.completions.create(**kw, stream=True))["choices"][0]
        calls = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
        for c in calls:
            assert c["id"] and c["id"].startswith("call_")
        return acc["finish"], calls, acc["content"] or None
    c = client.chat.completions.create(**kw)
    msg = c.choices[0].message
    calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments} for t in msg.tool_calls or []]
    return c.choices[0].finish_reason, calls, msg.content


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_required(client, stream) -> None:  # noqa: ANN001
    finish, calls, content = _run(client, stream, tool_choice="required")
    # Parallel calls are allowed: random weights may keep calling until max_tokens ("length"); every call
    # returned is still complete and valid.
    assert finish in ("tool_calls", "length")
    if finish == "length":  # the call being written when max_tokens hit is cut, as its streamed deltas were
        assert len(calls) >= 2
        calls = calls[:-1]
    _check_calls(calls, {"get_weather", "get_time"})
    no_tags(content)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_named_and_not_parallel(client, stream) -> None:  # noqa: ANN001
    finish, calls, _ = _run(client, stream, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert finish == "tool_calls" and len(calls) == 1
    _check_calls(calls, {"get_time"})
    finish, calls, _ = _run(client, stream, tool_choice="required", parallel_tool_calls=False)
    assert finish == "tool_calls" and len(calls) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_none_and_auto(client, stream) -> None:  # noqa: ANN001
    finish, calls, content = _run(client, stream, tool_choice="none")
    assert calls == [] and finish in ("stop", "length")
    no_tags(content)
    finish, calls, content = _run(client, stream, tool_choice="auto")
    no_tags(content)
    if finish == "tool_calls":
        assert calls
    elif calls:  # cut by max_tokens while calling
        assert finish == "length"


def test_stream_tool_calls_equal_non_stream(client) -> None:  # noqa: ANN001
    kw = {"tool_choice": "required", "max_tokens": 50}
    _, full, _ = _run(client, False, **kw)
    _, streamed, _ = _run(client, True, **kw)
    assert full and [(c["name"], c["arguments"]) for c in streamed] == [(c["name"], c["arguments"]) for c in full]


class Weather(BaseModel):
    city: Literal["Paris", "Tokyo"]
    sunny: bool
    unit: Literal["c", "f"] | None


def test_parse_with_a_pydantic_model(client) -> None:  # noqa: ANN001
    for thinking in (NO_THINK, {"reasoning": {"max_tokens": 8}}):
        c = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Weather, max_tokens=120,
                                          extra_body=thinking, seed=3)
        parsed = c.choices[0].message.parsed
        assert isinstance(parsed, Weather)
        no_tags(c.choices[0].message.content)


@pytest.mark.parametrize("stream", [False, True])
def test_json_object(client, stream) -> None:  # noqa: ANN001
    # Random weights write endless strings; a bias toward '"' and '}' lets the grammar close the object soon,
    # while the grammar (not the bias) is what makes the output valid JSON.
    bias = {"1": 6.0, "92": 6.0, "9207": 6.0}
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Reply in JSON."}], max_tokens=200,
              response_format={"type": "json_object"}, extra_body=NO_THINK, seed=4, logit_bias=bias)
    if stream:
        acc = collect_stream(client.chat.completions.create(**kw, stream=True))["choices"][0]
        content, finish = acc["content"], acc["finish"]
    else:
        c = client.chat.completions.create(**kw)
        content, finish = c.choices[0].message.content, c.choices[0].finish_reason
    assert finish == "stop", content
    assert isinstance(json.loads(content), dict)
