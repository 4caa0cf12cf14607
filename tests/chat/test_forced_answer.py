"""A forced answer (tool_choice required / named, a JSON schema) is delivered while thinking is on.

The contract: such a request ends with the call / the object, or with finish_reason "length" — never with a bare
"stop" inside the thought. A random "model" that strongly prefers to open a thought and to end the message at once
(logit bias on <think> and on the end tokens) is the worst case: before the fix it ended inside its thought.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from qwen3_api.chat.answer_room import UNKNOWN_ROOM, answer_room, minimal_instance
from qwen3_api.chat.constraint import constraint_factory
from qwen3_api.chat.output import ChoiceProcessor
from qwen3_api.chat.reasoning import ThinkState, budget_closing_ids, short_closing_ids
from qwen3_api.chat.template import ChatTemplate
from tests.chat.helpers import allowed_ids, random_walk, structural_bias

FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}, "level": {"enum": ["low", "high"]}},
        "required": ["ok", "level"], "additionalProperties": False}
SWITCH = {"type": "function", "function": {"name": "switch", "parameters": FLAG}}
OTHER = {"type": "function", "function": {"name": "other", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}


class Item(BaseModel):
    name: str
    tags: list[str]
    size: int | None


def _prompt(tok, tools=None, thinking=True) -> list[int]:
    return ChatTemplate(tok).encode([{"role": "user", "content": "Go"}], tools=tools, enable_thinking=thinking)


def _eager_bias(tok) -> torch.Tensor:
    """Open a thought, then end the message as soon as anything lets it end: the failure seen in the soak."""
    bias = structural_bias(tok)
    bias[tok.think_start_id] = 100.0
    for tid in tok.end_token_ids:
        bias[tid] = 100.0
    return bias


CASES = {
    "required": dict(tools=[SWITCH, OTHER], tool_choice="required"),
    "named": dict(tools=[SWITCH, OTHER], tool_choice={"type": "function", "function": {"name": "switch"}}),
    "json_schema": dict(response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": FLAG}}),
}


def _check_forced(kind: str, final, tokens: list[int], max_tokens: int) -> None:
    assert len(tokens) <= max_tokens
    if final.finish_reason == "length":
        return  # the other allowed ending
    if kind == "json_schema":
        assert final.finish_reason == "stop"
        jsonschema.validate(json.loads(final.content), FLAG)
    else:
        assert final.finish_reason == "tool_calls", (final, tokens)
        names = [c["function"]["name"] for c in final.tool_calls]
        assert names == ["switch"] if kind == "named" else names
        for call in final.tool_calls:
            if call["function"]["name"] == "switch":
                jsonschema.validate(json.loads(call["function"]["arguments"]), FLAG)


@pytest.mark.parametrize("max_tokens", [24, 60, 300])
@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("seed", range(3))
def test_forced_answer_is_delivered_while_thinking(tok, kind, seed, max_tokens):
    spec = CASES[kind]
    prompt = _prompt(tok, spec.get("tools"))
    factory = constraint_factory(tok, prompt_ids=prompt, max_tokens=max_tokens, **spec)
    tokens, reason = random_walk(factory(), tok, seed, max_tokens, _eager_bias(tok))
    proc = ChoiceProcessor(tok, prompt_ids=prompt, parse_tool_calls="tools" in spec)
    proc.feed(tokens)
    final = proc.finish(reason)
    _check_forced(kind, final, tokens, max_tokens)
    if max_tokens >= 60:
        # Room enough: the thought happened (the bias opened it and kept it going) and the answer still came.
        assert tokens[0] == tok.think_start_id and tok.think_end_id in tokens
        assert final.finish_reason != "length"


def test_end_tokens_are_masked_inside_the_thought_only_when_an_answer_is_forced(tok):
    prompt = _prompt(tok, [SWITCH])
    width = (tok.model_vocab_size + 31) // 32
    forced = constraint_factory(tok, prompt_ids=prompt, max_tokens=500, **CASES["required"])()
    free = constraint_factory(tok, prompt_ids=prompt, tools=[SWITCH], tool_choice="auto", thinking_budget=100)()
    for c in (forced, free):
        c.accept_token(tok.think_start_id)
        assert c.state is ThinkState.THINKING
    row = torch.full((1, width), -1, dtype=torch.int32)
    assert forced.fill_bitmask(row, 0) is True
    ok = set(allowed_ids(row[0], tok.model_vocab_size).tolist())
    assert tok.end_token_ids and not (tok.end_token_ids & ok)
    assert {tok.think_end_id, tok.tool_call_start_id, 15} <= ok  # anything else may be thought
    row.fill_(-1)
    assert free.fill_bitmask(row, 0) is False  # nothing forced: the thought is free to end the message


def test_thought_is_closed_in_time_for_the_answer(tok):
    """A model that would think forever: the closing is forced when only the answer's room is left."""
    spec = CASES["json_schema"]
    prompt = _prompt(tok)
    room = answer_room(tok, response_format=spec["response_format"], tools=None, tool_choice=None)
    closing = budget_closing_ids(tok)
    max_tokens = 200
    c = constraint_factory(tok, prompt_ids=prompt, max_tokens=max_tokens, **spec)()
    endless = [tok.think_start_id] + tok.encode(" hmm" * 300)
    tokens, reason = random_walk(c, tok, 0, max_tokens, structural_bias(tok), forced_first=endless)
    start = tokens.index(closing[0], 1)
    assert tokens[start:start + len(closing)] == closing
    assert start + len(closing) + room == max_tokens  # the thought ran exactly as long as the room allows
    proc = ChoiceProcessor(tok, prompt_ids=prompt)
    proc.feed(tokens)
    final = proc.finish(reason)
    assert reason == "stop" and final.reasoning.startswith(" hmm hmm")
    jsonschema.validate(json.loads(final.content), FLAG)


def test_no_room_to_think_means_no_thought(tok):
    spec = CASES["named"]
    prompt = _prompt(tok, spec["tools"])
    room = answer_room(tok, response_format=None, tools=spec["tools"], tool_choice=spec["tool_choice"])
    short = short_closing_ids(tok)
    c = constraint_factory(tok, prompt_ids=prompt, max_tokens=room + len(short) + 1, **spec)()
    width = (tok.model_vocab_size + 31) // 32
    row = torch.full((1, width), -1, dtype=torch.int32)
    assert c.fill_bitmask(row, 0) is True
    ok = set(allowed_ids(row[0], tok.model_vocab_size).tolist())
    assert tok.think_start_id not in ok and ok == {tok.tool_call_start_id}
    roomy = constraint_factory(tok, prompt_ids=prompt, max_tokens=room + len(short) + 2, **spec)()
    row.fill_(-1)
    roomy.fill_bitmask(row, 0)
    assert tok.think_start_id in set(allowed_ids(row[0], tok.model_vocab_size).tolist())


def test_short_closing_when_the_sentence_does_not_fit(tok):
    spec = CASES["json_schema"]
    prompt = _prompt(tok)
    c = constraint_factory(tok, prompt_ids=prompt, max_tokens=40, **spec)()
    tokens, _ = random_walk(c, tok, 1, 40, structural_bias(tok), forced_first=[tok.think_start_id] + [15] * 50)
    text = tok.decode(tokens, skip_special_tokens=False)
    assert "Considering the limited time" not in text and "</think>\n\n{" in text


def test_thinking_2507_prompt_starts_inside_the_thought(tok):
    """A prompt that already opened the thought (Thinking-2507) is in THINKING from the first token."""
    prompt = _prompt(tok) + tok.encode("<think>\n")
    c = constraint_factory(tok, prompt_ids=prompt, max_tokens=60, **CASES["json_schema"])()
    assert c.state is ThinkState.THINKING
    tokens, reason = random_walk(c, tok, 2, 60, _eager_bias(tok))
    proc = ChoiceProcessor(tok, prompt_ids=prompt)
    proc.feed(tokens)
    _check_forced("json_schema", proc.finish(reason), tokens, 60)


def test_budget_and_effort_still_apply_with_a_forced_answer(tok):
    spec = CASES["required"]
    prompt = _prompt(tok, spec["tools"])
    c = constraint_factory(tok, prompt_ids=prompt, max_tokens=400, thinking_budget=4, **spec)()
    tokens, reason = random_walk(c, tok, 0, 400, structural_bias(tok), forced_first=[tok.think_start_id] + [15] * 40)
    closing = budget_closing_ids(tok)
    assert tokens[1 + 4:1 + 4 + len(closing)] == closing and c.thought_tokens == 4


def test_no_think_turn_keeps_working(tok):
    """/no_think: the model writes an empty thought itself; the answer is still forced after it."""
    spec = CASES["json_schema"]
    prompt = ChatTemplate(tok).encode([{"role": "user", "content": "Go /no_think"}])
    c = constraint_factory(tok, prompt_ids=prompt, max_tokens=100, **spec)()
    tokens, reason = random_walk(c, tok, 0, 100, structural_bias(tok), forced_first=tok.encode("<think>\n\n</think>"))
    proc = ChoiceProcessor(tok, prompt_ids=prompt)
    proc.feed(tokens)
    final = proc.finish(reason)
    assert final.reasoning is None
    jsonschema.validate(json.loads(final.content), FLAG)


def test_minimal_instances(tok):
    schema = to_strict_json_schema(Item)
    instance = minimal_instance(schema)
    jsonschema.validate(instance, schema)
    assert minimal_instance(FLAG) == {"ok": False, "level": "low"}
    assert minimal_instance({"type": "array", "items": {"type": "integer", "minimum": 3}, "minItems": 2}) == [4, 4]
    assert minimal_instance({"anyOf": [{"type": "string", "minLength": 9}, {"type": "null"}]}) is None
    room = answer_room(tok, response_format={"type": "json_schema", "json_schema": {"schema": schema}}, tools=None,
                       tool_choice=None)
    assert 16 <= room < UNKNOWN_ROOM
    assert answer_room(tok, response_format={"type": "json_schema", "json_schema": {"schema": {
        "type": "string", "pattern": "^a+$"}}}, tools=None, tool_choice=None) == UNKNOWN_ROOM
    assert answer_room(tok, response_format=None, tools=[SWITCH], tool_choice="auto") == 0
