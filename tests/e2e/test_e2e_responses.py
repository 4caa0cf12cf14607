"""The official openai SDK's Responses API against a real keyed server (tiny random checkpoint, real tokenizer):
create / stream / parse, a function-call round trip over previous_response_id, stored responses, 402 / 429, and
the ledger. Random weights: structure, never words; grammars (a schema, a forced call) make endings certain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.api.helpers import validate_responses
from tests.e2e.helpers import MODEL, KeyedServer, keyed_server, no_tags

WEATHER = [{"type": "function", "name": "get_weather", "strict": True, "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
    "required": ["city"], "additionalProperties": False}}]
OFF = {"effort": "none"}


class Flag(BaseModel):
    ok: bool


# What the SDK's parse() sends for Flag: strict, so the grammar allows no other key and the object must end.
FLAG_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
               "additionalProperties": False}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[KeyedServer]:
    with keyed_server(tmp_path_factory.mktemp("responses"), qwen3_tokenizer_dir) as server:
        yield server


def _client(srv: KeyedServer, key: str = "rich") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key=srv.keys[key], max_retries=0, timeout=120)


def _raw(srv: KeyedServer, **body: Any) -> dict[str, Any]:
    r = httpx.post(srv.v1 + "/responses", json={"model": MODEL, **body}, timeout=120,
                   headers={"Authorization": f"Bearer {srv.keys['rich']}"})
    assert r.status_code == 200, r.text
    validate_responses("Response", r.json())
    return r.json()


def test_create_thinking_on_and_off_with_the_ledger(srv: KeyedServer) -> None:
    client = _client(srv)
    on = client.responses.create(model=MODEL, input="你好", max_output_tokens=40, reasoning={"effort": "low"},
                                 extra_body={"logit_bias": srv.think_bias()})
    validate_responses("Response", on.model_dump(exclude_unset=True))
    assert on.output[0].type == "reasoning" and on.output[0].content[0].text
    assert on.status in ("completed", "incomplete") and on.usage.output_tokens_details.reasoning_tokens > 0
    no_tags(on.output[0].content[0].text, on.output_text)
    row = srv.ledger("rich", on.id)
    assert row["endpoint"] == "/v1/responses" and row["status"] == "completed"
    assert (row["tokens_prompt"], row["tokens_completion"], row["tokens_reasoning"]) == (
        on.usage.input_tokens, on.usage.output_tokens, on.usage.output_tokens_details.reasoning_tokens)
    assert float(row["total_cost"]) == pytest.approx(on.usage.model_extra["cost"], rel=1e-9)
    off = _raw(srv, input="你好", max_output_tokens=8, reasoning=OFF)
    assert all(item["type"] == "message" for item in off["output"])
    assert off["usage"]["output_tokens_details"]["reasoning_tokens"] == 0


def test_stream_events_and_parse(srv: KeyedServer) -> None:
    client = _client(srv)
    body = {"model": MODEL, "input": "Is it ok?", "max_output_tokens": 60, "reasoning": {"effort": "low"},
            "logit_bias": srv.think_bias(), "text": {"format": {
                "type": "json_schema", "name": "Flag", "strict": True, "schema": FLAG_SCHEMA}}}
    with httpx.stream("POST", srv.v1 + "/responses", json={**body, "stream": True}, timeout=120,
                      headers={"Authorization": f"Bearer {srv.keys['rich']}"}) as r:
        raw = r.read().decode()
    events = [json.loads(block.split("\ndata: ", 1)[1]) for block in raw.split("\n\n") if "\ndata: " in block]
    for ev in events:
        validate_responses("ResponseStreamEvent", ev)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert Flag.model_validate_json(final["output"][1]["content"][0]["text"])
    # The SDK's helpers: stream() accumulates the same events, parse() gives the pydantic object.
    with client.responses.stream(model=MODEL, input="Is it ok?", text_format=Flag, max_output_tokens=60,
                                 reasoning=OFF) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        done = stream.get_final_response()
    assert isinstance(done.output_parsed, Flag) and deltas == done.output_text
    parsed = client.responses.parse(model=MODEL, input="Is it ok?", text_format=Flag, max_output_tokens=60,
                                    reasoning=OFF)
    assert isinstance(parsed.output_parsed, Flag) and parsed.status == "completed"


def test_function_call_round_trip_and_stored_responses(srv: KeyedServer) -> None:
    client = _client(srv)
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=WEATHER, reasoning=OFF,
                                    tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Oslo")
    second = client.responses.create(model=MODEL, previous_response_id=first.id, tools=WEATHER, reasoning=OFF,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "21 C, sunny"}], max_output_tokens=6)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens
    # The conversation's start is the earlier prompt: the prefix cache serves it.
    assert second.usage.input_tokens_details.cached_tokens > 0
    assert client.responses.retrieve(first.id).id == first.id
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    other = _client(srv, "broke")  # another key: it sees none of them
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, previous_response_id=first.id, input="again", max_output_tokens=4)
    assert info.value.body["code"] == "previous_response_not_found"


def test_402_and_429_in_openai_shape(srv: KeyedServer) -> None:
    broke = _client(srv, "broke")
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            broke.responses.create(model=MODEL, input="hi", max_output_tokens=4, stream=stream)
        assert info.value.status_code == 402
        validate_responses("ErrorResponse", info.value.response.json())
    slow = _client(srv, "slow")
    slow.responses.create(model=MODEL, input="hi", max_output_tokens=2, reasoning=OFF)
    with pytest.raises(openai.RateLimitError) as info:
        slow.responses.create(model=MODEL, input="hi", max_output_tokens=2)
    assert int(info.value.response.headers["retry-after"]) > 0
    validate_responses("ErrorResponse", info.value.response.json())
