"""POST /v1/responses over a scripted engine: OpenAI's published schema for every body and event, stream ==
whole, function calls, previous_response_id, stored responses per key, refusals, billing and the ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qwen3_api.errors import APIError
from tests.api.helpers import MODEL, parse_sse, text_script, validate_responses

THOUGHT = "<think>\nLet me think about 你好.\n</think>\n\nHello there, friend!<|im_end|>"
TOOL = ('<think>\nI should call the tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>')
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def post(h: Any, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("input", "hi")
    return h.client.post("/v1/responses", json=body)


def stream(h: Any, **body: Any) -> list[dict[str, Any]]:
    body.setdefault("model", MODEL)
    body.setdefault("input", "hi")
    with h.client.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        raw = r.read().decode()
    events = []
    for block in raw.split("\n\n")[:-1]:
        name, data = block.split("\n", 1)
        assert name.startswith("event: ")
        [ev] = parse_sse(data + "\n\n")
        assert ev["type"] == name[len("event: "):]  # the SSE event name is the event's type
        events.append(ev)
    return events


def _ids_out(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in output]


def test_response_validates_and_bills(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    r = post(h, instructions="Be brief.", metadata={"run": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    validate_responses("Response", body)
    assert body["id"].startswith("resp_") and r.headers["x-generation-id"] == body["id"]
    assert body["status"] == "completed" and body["incomplete_details"] is None and body["error"] is None
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [
        {"type": "reasoning_text", "text": "Let me think about 你好."}] and reasoning["summary"] == []
    assert message["type"] == "message" and message["content"][0]["text"] == "Hello there, friend!"
    assert body["instructions"] == "Be brief." and body["metadata"] == {"run": "1"} and body["store"] is True
    usage = body["usage"]
    n = len(h.engine.script([], None, 0))
    assert usage["output_tokens"] == n and 0 < usage["output_tokens_details"]["reasoning_tokens"] < n
    assert usage["input_tokens"] == len(h.engine.requests[0][0]) and usage["cost"] > 0
    [settled] = h.gateway.settled
    assert settled["generation_id"] == body["id"] and settled["endpoint"] == "/v1/responses"
    prompt = chat_tok.decode(h.engine.requests[0][0], skip_special_tokens=False)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_stream_events_validate_and_equal_the_whole(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    whole = post(h).json()
    events = stream(h)
    for ev in events:
        validate_responses("ResponseStreamEvent", ev)
    assert [ev["sequence_number"] for ev in events] == list(range(len(events)))
    kinds = [ev["type"] for ev in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 2
    thought = "".join(ev["delta"] for ev in events if ev["type"] == "response.reasoning_text.delta")
    text = "".join(ev["delta"] for ev in events if ev["type"] == "response.output_text.delta")
    assert thought == "Let me think about 你好." and text == "Hello there, friend!"
    final = events[-1]["response"]
    assert _ids_out(final["output"]) == _ids_out(whole["output"])
    assert final["usage"]["output_tokens"] == whole["usage"]["output_tokens"]
    # Each item's added/done pair and its deltas carry the same id as the final output.
    done_ids = [ev["item"]["id"] for ev in events if ev["type"] == "response.output_item.done"]
    assert done_ids == [item["id"] for item in final["output"]]
    assert [s["streamed"] for s in h.gateway.settled] == [False, True]


def test_function_call_round_trip_with_previous_response_id(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, TOOL))
    first = post(h, tools=TOOLS, input="Weather in Paris?").json()
    validate_responses("Response", first)
    call = first["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"].startswith("call_")
    events = stream(h, tools=TOOLS, input="Weather in Paris?")
    args = "".join(ev["delta"] for ev in events if ev["type"] == "response.function_call_arguments.delta")
    [done] = [ev for ev in events if ev["type"] == "response.function_call_arguments.done"]
    assert args == done["arguments"] == call["arguments"] and done["name"] == "get_weather"
    second = post(h, tools=TOOLS, previous_response_id=first["id"],
                  input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "21 C, sunny"}])
    assert second.status_code == 200, second.text
    assert second.json()["previous_response_id"] == first["id"]
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    # The earlier turn is replayed: the question, the call as the model wrote it, then the tool's answer.
    assert prompt.index("Weather in Paris?") < prompt.rindex('"name": "get_weather"') < prompt.index("21 C, sunny")
    assert "<tool_response>\n21 C, sunny\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_items_replayed_by_the_client_render_as_one_turn(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    first = post(h, tools=TOOLS, input="Weather?").json()
    items = [{"role": "user", "content": "Weather?"}, *first["output"],
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "-3 C"}]}]
    assert post(h, tools=TOOLS, input=items, store=False).status_code == 200
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    # reasoning + message + function_call are one assistant message; its thought is kept (a tool loop).
    assert prompt.count("<|im_start|>assistant") == 2
    assert "Let me think about 你好." in prompt and '"city": "Oslo"' in prompt and "-3 C" in prompt


def test_incomplete_when_max_output_tokens_cuts(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    body = post(h, max_output_tokens=5).json()
    validate_responses("Response", body)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["status"] for i in body["output"]] == ["incomplete"] and body["usage"]["output_tokens"] == 5
    events = stream(h, max_output_tokens=5)
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "incomplete"


def test_stored_responses_are_per_key(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    body = post(h, input=[{"role": "user", "content": [{"type": "input_text", "text": "a"}]},
                          {"role": "user", "content": "b"}]).json()
    got = h.client.get(f"/v1/responses/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    other = {"Authorization": "Bearer other"}
    assert h.client.get(f"/v1/responses/{body['id']}", headers=other).status_code == 404
    assert h.client.delete(f"/v1/responses/{body['id']}", headers=other).status_code == 404
    r = post(h, previous_response_id=body["id"], input="c")
    assert r.status_code == 200
    r = h.client.post("/v1/responses", headers=other, json={"model": MODEL, "input": "c",
                                                            "previous_response_id": body["id"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "previous_response_not_found"
    items = h.client.get(f"/v1/responses/{body['id']}/input_items").json()
    validate_responses("ResponseItemList", items)
    assert [i["content"][0]["text"] for i in items["data"]] == ["b", "a"] and items["has_more"] is False
    page = h.client.get(f"/v1/responses/{body['id']}/input_items?order=asc&limit=1").json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["a"] and page["has_more"] is True
    rest = h.client.get(f"/v1/responses/{body['id']}/input_items?order=asc&after={page['last_id']}").json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["b"]
    deleted = h.client.delete(f"/v1/responses/{body['id']}")
    assert deleted.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
    assert h.client.get(f"/v1/responses/{body['id']}").status_code == 404
    unstored = post(h, store=False).json()
    assert h.client.get(f"/v1/responses/{unstored['id']}").status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]},
     "input[0].content[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"background": True}, "background"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"tool_choice": {"type": "function", "name": "nope"}, "tools": TOOLS}, "tool_choice"),
    ({"max_output_tokens": 5000}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "bogus"}}}}, "text.format.schema"),
    ({"temperature": 3}, "temperature"),
    ({"previous_response_id": "resp_nope"}, "previous_response_id"),
    ({"input": []}, "input"),
])
def test_refusals_name_the_field(make_harness: Any, chat_tok: Any, body: dict[str, Any], param: str) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    r = post(h, **body)
    assert r.status_code == 400, r.text
    validate_responses("ErrorResponse", r.json())
    assert r.json()["error"]["param"] == param, r.json()
    assert h.gateway.admitted == []


@pytest.mark.parametrize("status", [402, 429])
def test_admission_refusals_keep_openai_shape(make_harness: Any, chat_tok: Any, status: int) -> None:
    gw_error = APIError(status, "no", "insufficient_quota" if status == 402 else "rate_limit_error",
                        headers={"Retry-After": "3"} if status == 429 else None)
    h = make_harness(text_script(chat_tok, THOUGHT))
    h.gateway.refuse = gw_error
    for streamed in (False, True):
        r = post(h, stream=streamed)
        assert r.status_code == status and r.json()["error"]["message"] == "no"
        validate_responses("ErrorResponse", r.json())
    assert h.gateway.settled == []


def test_thinking_effort_format_and_truncation(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT), max_model_len=300)
    post(h, reasoning={"effort": "none"})
    assert chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False).endswith(
        "<think>\n\n</think>\n\n")
    post(h, reasoning={"effort": "low", "summary": "auto"}, max_output_tokens=100,
         text={"format": {"type": "json_schema", "name": "obj", "strict": True, "schema": {
             "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}})
    params = h.engine.requests[-1][1]
    assert params.constraint_factory is not None and params.max_tokens == 100
    post(h, seed=7, top_k=5, min_p=0.1, logit_bias={"100": 2.5})  # the chat route's sampling, as extensions
    params = h.engine.requests[-1][1]
    assert (params.seed, params.top_k, params.min_p, params.logit_bias) == (7, 5, 0.1, {100: 2.5})
    r = post(h, logit_bias={"100": 500})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias.100"
    long = [{"role": "user", "content": "word " * 120}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "word " * 120}, {"role": "user", "content": "last"}]
    r = post(h, input=long, max_output_tokens=50)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] in ("input", "max_output_tokens")
    r = post(h, input=long, max_output_tokens=50, truncation="auto")
    assert r.status_code == 200, r.text
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert "last" in prompt and prompt.count("word") == 120  # the oldest items went first


def test_input_tokens_is_the_billed_count(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    body = {"model": MODEL, "input": "How many?", "instructions": "Count.", "tools": TOOLS}
    counted = h.client.post("/v1/responses/input_tokens", json=body).json()
    validate_responses("TokenCountsResource", counted)
    assert counted["input_tokens"] == post(h, **body).json()["usage"]["input_tokens"]
    assert h.gateway.settled[-1]["endpoint"] == "/v1/responses" and len(h.gateway.settled) == 1


def test_failure_mid_stream_is_response_failed(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    h.engine.fail_after = 3
    events = stream(h)
    for ev in events:
        validate_responses("ResponseStreamEvent", ev)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"] == "server_error"
    assert h.gateway.settled[-1]["status"] == "error"
    assert h.client.get(f"/v1/responses/{events[-1]['response']['id']}").status_code == 404
