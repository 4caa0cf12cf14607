"""Forced answers with thinking on, against the real server: 24 requests that would end inside their thought.

The soak found `tool_choice` required / named and `response_format: json_schema` ending with finish "stop" and no
call / no object in 8 of 24 requests on the demo model. Here the worst case is made certain with logit_bias:
the model always opens a thought and would end the message as soon as anything allowed it. Each request must end
with the call / the object, or with "length".
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.e2e.helpers import MODEL, collect_stream, think_bias

FLAG = {"type": "object", "additionalProperties": False, "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
TOOLS = [{"type": "function", "function": {"name": "set_flag", "parameters": FLAG}},
         {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}]
CASES = {
    "required": {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
    "named": {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "set_flag"}}},
    "json_schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "flag", "schema": FLAG}}},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", list(CASES))
def test_forced_answer_arrives_while_thinking(client, server, kind: str, stream: bool) -> None:  # noqa: ANN001
    bias = think_bias(server) | {"151645": 100.0, "151643": 100.0}  # <think>, then <|im_end|> / <|endoftext|>
    for seed in range(4):
        kw = {"model": MODEL, "messages": [{"role": "user", "content": "Set the flag."}], "max_tokens": 120,
              "seed": seed, "temperature": 1.0, "logit_bias": bias, **CASES[kind]}
        if stream:
            acc = collect_stream(client.chat.completions.create(**kw, stream=True))["choices"][0]
            finish, content = acc["finish"], acc["content"] or None
            calls = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
        else:
            choice = client.chat.completions.create(**kw).choices[0]
            finish, content = choice.finish_reason, choice.message.content
            calls = [{"name": t.function.name, "arguments": t.function.arguments}
                     for t in choice.message.tool_calls or []]
        assert finish in ("tool_calls", "stop", "length"), finish
        if finish == "length":
            continue
        if kind == "json_schema":
            assert finish == "stop"
            jsonschema.validate(json.loads(content), FLAG)
        else:
            assert finish == "tool_calls" and calls, (finish, content)
            assert kind != "named" or [c["name"] for c in calls] == ["set_flag"]
            for call in calls:
                if call["name"] == "set_flag":
                    jsonschema.validate(json.loads(call["arguments"]), FLAG)
