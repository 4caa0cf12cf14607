"""The official anthropic SDK against a real keyed server (tiny random checkpoint, real tokenizer): create and
stream with thinking on (a budget) and off, a tool_use / tool_result round trip, count_tokens, 402 / 429 in
Anthropic's shape, and the ledger. Every body and event is validated by the SDK's own types (Anthropic publishes no
schema); random weights: structure, never words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from tests.e2e.helpers import MODEL, KeyedServer, keyed_server, no_tags

HELLO = [{"role": "user", "content": "你好"}]
WEATHER = [{"name": "get_weather", "description": "Weather of a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}}, "required": ["city"],
    "additionalProperties": False}}]
_EVENT = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[KeyedServer]:
    with keyed_server(tmp_path_factory.mktemp("messages"), qwen3_tokenizer_dir) as server:
        yield server


def _client(srv: KeyedServer, key: str = "rich") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.base_url, api_key=srv.keys[key], max_retries=0, timeout=120)


def test_create_thinking_on_and_off_with_the_ledger(srv: KeyedServer) -> None:
    client = _client(srv)
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=40, messages=HELLO, thinking={"type": "enabled", "budget_tokens": 8},
        extra_body={"logit_bias": srv.think_bias()})
    on = Message.model_validate(raw.http_response.json())  # validated, not merely constructed
    assert on.content[0].type == "thinking" and on.content[0].thinking and on.content[0].signature
    assert on.stop_reason in ("end_turn", "max_tokens") and on.usage.output_tokens > 0
    no_tags(on.content[0].thinking, *[b.text for b in on.content if b.type == "text"])
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO,
                                           thinking={"type": "enabled", "budget_tokens": 8})
    assert counted.input_tokens == on.usage.input_tokens + on.usage.cache_read_input_tokens
    row = srv.ledger("rich", on.id)
    assert row["endpoint"] == "/v1/messages" and row["status"] == "completed"
    assert (row["tokens_prompt"], row["tokens_completion"], row["tokens_cached"]) == (
        counted.input_tokens, on.usage.output_tokens, on.usage.cache_read_input_tokens)
    assert 0 < row["tokens_reasoning"] < on.usage.output_tokens or on.stop_reason == "max_tokens"
    off = client.messages.create(model=MODEL, max_tokens=8, messages=HELLO, thinking={"type": "disabled"})
    assert [b.type for b in off.content] in (["text"], [])
    assert srv.ledger("rich", off.id)["tokens_reasoning"] == 0


def test_stream_thinking_with_the_sdk_and_raw_events(srv: KeyedServer) -> None:
    client = _client(srv)
    kw = dict(model=MODEL, max_tokens=40, messages=HELLO, thinking={"type": "enabled", "budget_tokens": 8},
              extra_body={"logit_bias": srv.think_bias()})
    with client.messages.stream(**kw) as stream:
        thought = "".join(e.thinking for e in stream if e.type == "thinking")
        final = stream.get_final_message()
    Message.model_validate(final.model_dump())
    assert final.content[0].type == "thinking" and final.content[0].thinking == thought
    assert final.content[0].signature and final.stop_reason in ("end_turn", "max_tokens")
    with httpx.stream("POST", srv.v1 + "/messages", timeout=120, headers={"x-api-key": srv.keys["rich"]},
                      json={**{k: v for k, v in kw.items() if k != "extra_body"}, **kw["extra_body"],
                            "stream": True}) as r:
        blocks = [b for b in r.read().decode().split("\n\n") if b]
    names = [b.split("\n", 1)[0][len("event: "):] for b in blocks]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    for block in blocks:
        name, data = block.split("\n", 1)
        event = json.loads(data[len("data: "):])
        assert name == f"event: {event['type']}"
        if event["type"] != "ping":
            _EVENT.validate_python(event)


def test_tool_use_round_trip(srv: KeyedServer) -> None:
    client = _client(srv)
    first = client.messages.create(model=MODEL, max_tokens=60, tools=WEATHER, messages=[
        {"role": "user", "content": "Weather in Paris?"}], tool_choice={"type": "tool", "name": "get_weather"})
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and call.input["city"] in ("Paris", "Oslo")
    with client.messages.stream(model=MODEL, max_tokens=60, tools=WEATHER, tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use" and streamed.content[-1].input["city"] in ("Paris", "Oslo")
    second = client.messages.create(model=MODEL, max_tokens=6, tools=WEATHER, messages=[
        {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C, sunny"}]}])
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    # The second prompt holds the first: the prefix cache serves its start.
    assert second.usage.cache_read_input_tokens > 0


def test_402_and_429_in_anthropic_shape(srv: KeyedServer) -> None:
    broke = _client(srv, "broke")
    for stream in (False, True):
        with pytest.raises(anthropic.APIStatusError) as info:
            broke.messages.create(model=MODEL, max_tokens=4, messages=HELLO, stream=stream)
        assert info.value.status_code == 402
        assert ErrorResponse.model_validate(info.value.response.json()).error.type == "billing_error"
    slow = _client(srv, "slow")
    slow.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as info:
        slow.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    assert ErrorResponse.model_validate(info.value.response.json()).error.type == "rate_limit_error"
    with pytest.raises(anthropic.AuthenticationError) as info:
        anthropic.Anthropic(base_url=srv.base_url, api_key="sk-wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=2, messages=HELLO)
    assert ErrorResponse.model_validate(info.value.response.json()).error.type == "authentication_error"
