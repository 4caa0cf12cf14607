"""A random model under our constraints still returns output that parses and validates."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from qwen3_api.chat.constraint import constraint_factory
from qwen3_api.chat.output import ChoiceProcessor
from qwen3_api.chat.template import ChatTemplate
from qwen3_api.errors import APIError
from tests.chat.helpers import allowed_ids, random_walk, structural_bias


class Address(BaseModel):
    city: str
    zip: int | None


class Person(BaseModel):
    name: str
    age: int
    home: Address
    tags: list[str]
    nickname: str | None


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}, "required": ["tz"]}}}


@pytest.fixture(scope="module")
def bias(tok):
    return structural_bias(tok)


def _prompt(tok, thinking: bool, tools=None) -> list[int]:
    return ChatTemplate(tok).encode([{"role": "user", "content": "Go"}], tools=tools, enable_thinking=thinking)


def _run(tok, factory, prompt, seed, bias, max_tokens=400, script=None, tools=False):
    tokens, reason = random_walk(factory(), tok, seed, max_tokens, bias, forced_first=script)
    proc = ChoiceProcessor(tok, prompt_ids=prompt, parse_tool_calls=tools)
    proc.feed(tokens)
    return proc.finish(reason), tokens


@pytest.mark.parametrize("seed", range(4))
def test_json_object_random_model(tok, bias, seed):
    prompt = _prompt(tok, thinking=False)
    factory = constraint_factory(tok, prompt_ids=prompt, response_format={"type": "json_object"})
    final, _ = _run(tok, factory, prompt, seed, bias)
    assert final.finish_reason == "stop"
    assert isinstance(json.loads(final.content), dict)
    assert final.reasoning is None


@pytest.mark.parametrize("seed", range(4))
def test_pydantic_strict_schema_random_model(tok, bias, seed):
    schema = to_strict_json_schema(Person)  # exactly what client.chat.completions.parse() sends
    assert "$defs" in schema and schema["additionalProperties"] is False
    prompt = _prompt(tok, thinking=False)
    rf = {"type": "json_schema", "json_schema": {"name": "Person", "schema": schema, "strict": True}}
    final, _ = _run(tok, constraint_factory(tok, prompt_ids=prompt, response_format=rf), prompt, seed, bias)
    data = json.loads(final.content)
    jsonschema.validate(data, schema)
    Person.model_validate(data)


def test_grammar_waits_for_think_end(tok, bias):
    """Thinking on: the reasoning is free (here scripted), the grammar starts after </think>."""
    prompt = _prompt(tok, thinking=True)
    rf = {"type": "json_schema", "json_schema": {"name": "A", "schema": to_strict_json_schema(Address)}}
    factory = constraint_factory(tok, prompt_ids=prompt, response_format=rf)
    script = tok.encode("<think>\nI will write {not json} freely.\n</think>")
    final, tokens = _run(tok, factory, prompt, 7, bias, script=script)
    assert tokens[: len(script)] == script
    assert final.reasoning == "I will write {not json} freely."
    Address.model_validate_json(final.content)


def test_thinking_budget_forces_close_then_grammar(tok, bias):
    prompt = _prompt(tok, thinking=True)
    factory = constraint_factory(tok, prompt_ids=prompt, response_format={"type": "json_object"}, thinking_budget=5)
    c = factory()
    tokens, reason = random_walk(c, tok, 3, 400, bias, forced_first=tok.encode("<think>\none two three four five six"))
    proc = ChoiceProcessor(tok, prompt_ids=prompt)
    proc.feed(tokens)
    final = proc.finish(reason)
    text = tok.decode(tokens, skip_special_tokens=False)
    assert "Considering the limited time by the user" in text and "</think>\n\n{" in text
    assert final.reasoning.startswith("one two three four")
    assert "</think>" not in final.content and isinstance(json.loads(final.content), dict)
    assert c.thought_tokens == 5


def test_budget_without_grammar_lets_model_answer(tok):
    prompt = _prompt(tok, thinking=True)
    c = constraint_factory(tok, prompt_ids=prompt, thinking_budget=3)()
    script = tok.encode("<think>\na b c d e f g h")
    tokens, _ = random_walk(c, tok, 0, 40, forced_first=script)
    closing = tok.encode("\n\nConsidering the limited time by the user, I have to give the solution based on "
                         "the thinking directly now.\n</think>\n\n")
    assert tokens[1 + 3 : 1 + 3 + len(closing)] == closing
    assert c.fill_bitmask(__import__("torch").full((1, 4748), -1, dtype=__import__("torch").int32), 0) is False


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_tool_choice_required_random_model(tok, bias, seed, parallel):
    tools = [WEATHER, TIME]
    prompt = _prompt(tok, thinking=False, tools=tools)
    factory = constraint_factory(tok, prompt_ids=prompt, tools=tools, tool_choice="required",
                                 parallel_tool_calls=parallel)
    final, _ = _run(tok, factory, prompt, seed, bias, tools=True)
    assert final.finish_reason == "tool_calls" and final.content is None
    assert final.tool_calls and (parallel or len(final.tool_calls) == 1)
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in final.tool_calls:
        assert call["id"].startswith("call_") and call["type"] == "function"
        jsonschema.validate(json.loads(call["function"]["arguments"]), by_name[call["function"]["name"]])


@pytest.mark.parametrize("seed", range(2))
def test_tool_choice_named_random_model(tok, bias, seed):
    tools = [WEATHER, TIME]
    prompt = _prompt(tok, thinking=False, tools=tools)
    choice = {"type": "function", "function": {"name": "get_time"}}
    final, _ = _run(tok, constraint_factory(tok, prompt_ids=prompt, tools=tools, tool_choice=choice),
                    prompt, seed, bias, tools=True)
    assert [c["function"]["name"] for c in final.tool_calls] == ["get_time"]
    assert json.loads(final.tool_calls[0]["function"]["arguments"])["tz"] in ("UTC", "CET")


def test_tool_choice_none_masks_tool_call_token(tok):
    import torch

    prompt = _prompt(tok, thinking=False, tools=[WEATHER])
    c = constraint_factory(tok, prompt_ids=prompt, tools=[WEATHER], tool_choice="none")()
    mask = torch.full((1, 4748), -1, dtype=torch.int32)
    assert c.fill_bitmask(mask, 0) is True
    ok = set(allowed_ids(mask[0], tok.model_vocab_size).tolist())
    assert tok.tool_call_start_id not in ok and tok.eos_token_id in ok and len(ok) > 150_000


def test_parallel_false_in_auto_allows_only_eos_after_a_call(tok):
    import torch

    prompt = _prompt(tok, thinking=False, tools=[WEATHER])
    c = constraint_factory(tok, prompt_ids=prompt, tools=[WEATHER], parallel_tool_calls=False)()
    for tid in tok.encode('<tool_call>\n{"name": "get_weather", "arguments": {"city": "x", "days": 1}}\n</tool_call>'):
        c.accept_token(tid)
    mask = torch.full((1, 4748), -1, dtype=torch.int32)
    assert c.fill_bitmask(mask, 0)
    assert allowed_ids(mask[0], tok.model_vocab_size).tolist() == [tok.eos_token_id]


@pytest.mark.parametrize("seed", range(2))
def test_strict_tool_in_auto_mode(tok, bias, seed):
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    prompt = _prompt(tok, thinking=False, tools=[strict])
    # parallel_tool_calls=False: after the one call only the eos may follow (else the random model rambles on)
    factory = constraint_factory(tok, prompt_ids=prompt, tools=[strict], parallel_tool_calls=False)
    script = tok.encode("Checking. <tool_call>")  # free text, then the model opens a call: the block is constrained
    final, _ = _run(tok, factory, prompt, seed, bias, script=script, tools=True)
    assert final.content == "Checking."
    args = json.loads(final.tool_calls[0]["function"]["arguments"])
    jsonschema.validate(args, WEATHER["function"]["parameters"])


def test_grammar_never_allows_extra_vocab_ids(tok):
    import torch

    prompt = _prompt(tok, thinking=False)
    c = constraint_factory(tok, prompt_ids=prompt, response_format={"type": "json_object"})()
    mask = torch.full((1, 4748), -1, dtype=torch.int32)
    c.fill_bitmask(mask, 0)
    ok = allowed_ids(mask[0], tok.model_vocab_size)
    assert ok.max() < tok.vocab_size and ok.numel() >= 1


def test_start_state_allows_think_or_grammar(tok):
    import torch

    prompt = _prompt(tok, thinking=True)
    c = constraint_factory(tok, prompt_ids=prompt, response_format={"type": "json_object"})()
    mask = torch.full((1, 4748), -1, dtype=torch.int32)
    c.fill_bitmask(mask, 0)
    ok = set(allowed_ids(mask[0], tok.model_vocab_size).tolist())
    assert tok.think_start_id in ok and tok.encode("{")[0] in ok and tok.encode("hello")[0] not in ok


def test_bad_requests_are_400(tok):
    prompt = _prompt(tok, thinking=False)
    with pytest.raises(APIError) as e:
        constraint_factory(tok, prompt_ids=prompt, tool_choice="required")
    assert e.value.status == 400 and e.value.param == "tool_choice"
    with pytest.raises(APIError):
        constraint_factory(tok, prompt_ids=prompt, tools=[WEATHER],
                           tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(APIError) as e:
        constraint_factory(tok, prompt_ids=prompt, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}})
    assert e.value.param == "response_format.json_schema.schema"
    assert constraint_factory(tok, prompt_ids=prompt) is None


def test_required_keeps_the_reasoning(tok, bias):
    """Peer pitfall #9: tool_choice required with thinking on still returns the reasoning, then the calls."""
    tools = [WEATHER, TIME]
    prompt = _prompt(tok, thinking=True, tools=tools)
    factory = constraint_factory(tok, prompt_ids=prompt, tools=tools, tool_choice="required",
                                 parallel_tool_calls=False)
    script = tok.encode("<think>\nThe user wants the weather.\n</think>\n\n")
    final, tokens = _run(tok, factory, prompt, 1, bias, script=script, tools=True)
    assert tokens[: len(script)] == script  # the "\n\n" separator is allowed before the grammar starts
    assert final.reasoning == "The user wants the weather."
    assert final.content is None and final.finish_reason == "tool_calls" and len(final.tool_calls) == 1
