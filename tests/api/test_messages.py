"""POST /v1/messages over a scripted engine: the anthropic SDK's own types for every body, event and error
(Anthropic publishes no schema), stream == whole, thinking, tools, auth headers, refusals and the ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from qwen3_api.errors import APIError
from tests.api.helpers import MODEL, parse_sse, text_script

THOUGHT = "<think>\nLet me think about 你好.\n</think>\n\nHello there, friend!<|im_end|>"
ANSWER = "Hello there, friend! STOP and more<|im_end|>"
TOOL = ('<think>\nI should call the tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>')
TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
THINK = {"type": "enabled", "budget_tokens": 50}
_EVENT = TypeAdapter(RawMessageStreamEvent)


def message(body: dict[str, Any]) -> Message:
    """The body as the SDK's Message (validated, not constructed), with the keys we promise present."""
    msg = Message.model_validate(body)
    assert msg.usage.cache_read_input_tokens is not None and msg.stop_reason is not None
    return msg


def post(h: Any, headers: dict[str, str] | None = None, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("max_tokens", 200)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return h.client.post("/v1/messages", json=body, headers=headers or {"x-api-key": "sk-test",
                                                                       "anthropic-version": "2023-06-01"})


def stream(h: Any, **body: Any) -> list[dict[str, Any]]:
    body.setdefault("model", MODEL)
    body.setdefault("max_tokens", 200)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    with h.client.stream("POST", "/v1/messages", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        raw = r.read().decode()
    events = []
    for block in raw.split("\n\n")[:-1]:
        name, data = block.split("\n", 1)
        [ev] = parse_sse(data + "\n\n")
        assert name == f"event: {ev['type']}"  # the SDK dispatches on the SSE event name
        if ev["type"] not in ("ping", "error"):
            _EVENT.validate_python(ev)
        events.append(ev)
    return events


def collect(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks a client assembles from the stream (what the SDK's accumulator does)."""
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    for ev in events:
        if ev["type"] == "content_block_start":
            assert ev["index"] == len(blocks)
            blocks.append(dict(ev["content_block"]))
        elif ev["type"] == "content_block_delta":
            block, delta = blocks[ev["index"]], ev["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[ev["index"]] = partial.get(ev["index"], "") + delta["partial_json"]
                block["input"] = json.loads(partial[ev["index"]])
    return blocks


def test_thinking_message_validates_and_bills(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    r = post(h, thinking=THINK, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
    assert r.status_code == 200, r.text
    msg = message(r.json())
    assert msg.id.startswith("msg_") and r.headers["x-generation-id"] == msg.id and msg.model == MODEL
    thinking, text = msg.content
    assert thinking.type == "thinking" and thinking.thinking == "Let me think about 你好." and thinking.signature
    assert text.type == "text" and text.text == "Hello there, friend!"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    n = len(h.engine.script([], None, 0))
    assert msg.usage.output_tokens == n
    assert msg.usage.input_tokens + msg.usage.cache_read_input_tokens == len(h.engine.requests[0][0])
    assert r.json()["usage"]["cost"] > 0
    [settled] = h.gateway.settled
    assert settled["generation_id"] == msg.id and settled["endpoint"] == "/v1/messages"
    prompt = chat_tok.decode(h.engine.requests[0][0], skip_special_tokens=False)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert not prompt.endswith("<think>\n\n</think>\n\n")  # thinking on
    assert h.engine.requests[0][1].constraint_factory is not None  # the budget is enforced by the grammar layer


def test_stream_equals_whole(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    whole = post(h, thinking=THINK).json()
    events = stream(h, thinking=THINK)
    kinds = [ev["type"] for ev in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    assert collect(events) == whole["content"]
    start, delta = events[0]["message"], events[-2]
    assert start["id"] != whole["id"] and start["content"] == [] and start["stop_reason"] is None
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == whole["usage"]["output_tokens"]
    assert delta["usage"]["input_tokens"] == start["usage"]["input_tokens"] == whole["usage"]["input_tokens"]


def test_thinking_is_off_unless_asked(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "Hello!<|im_end|>"))
    for thinking in (None, {"type": "disabled"}):
        body = {"thinking": thinking} if thinking else {}
        msg = message(post(h, **body).json())
        assert [b.type for b in msg.content] == ["text"]
        assert chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False).endswith(
            "<think>\n\n</think>\n\n")


def test_tool_use_round_trip(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, TOOL))
    msg = message(post(h, tools=TOOLS, thinking=THINK).json())
    assert msg.stop_reason == "tool_use"
    thinking, call = msg.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    events = stream(h, tools=TOOLS, thinking=THINK)
    assert collect(events)[1] == {"type": "tool_use", "id": collect(events)[1]["id"], "name": "get_weather",
                                  "input": {"city": "Paris"}}
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                             "content": [{"type": "text", "text": "21 C"}]},
                                            {"type": "tool_result", "tool_use_id": "x", "content": "oops",
                                             "is_error": True}]}]
    r = post(h, tools=TOOLS, thinking=THINK, messages=history,
             tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True})
    assert r.status_code == 200, r.text
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\n21 C\n</tool_response>" in prompt and "Error: oops" in prompt
    assert "I should call the tool." in prompt  # the thought of the tool turn is fed back (a tool loop)
    params = h.engine.requests[-1][1]
    assert params.constraint_factory is not None
    post(h, seed=3, top_k=4, logit_bias={"100": -1.0})  # top_k native, the others the chat route's extensions
    params = h.engine.requests[-1][1]
    assert (params.seed, params.top_k, params.logit_bias) == (3, 4, {100: -1.0})


def test_stop_sequence_and_max_tokens(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, ANSWER))
    msg = message(post(h, stop_sequences=["STOP"]).json())
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    assert msg.content[0].text == "Hello there, friend! "  # as the chat route: the text up to the stop string
    assert stream(h, stop_sequences=["STOP"])[-2]["delta"] == {"stop_reason": "stop_sequence",
                                                                 "stop_sequence": "STOP"}
    msg = message(post(h, max_tokens=3).json())
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3


def test_count_tokens_is_the_billed_count(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    body = {"model": MODEL, "system": "Count.", "tools": TOOLS, "thinking": THINK,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "How many?"}]}]}
    r = h.client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": "k"})
    counted = MessageTokensCount.model_validate(r.json())
    billed = message(post(h, **body).json())
    assert counted.input_tokens == billed.usage.input_tokens + billed.usage.cache_read_input_tokens
    assert len(h.gateway.settled) == 1  # counting is free


@pytest.mark.parametrize(("body", "status", "kind", "words"), [
    ({"max_tokens": None}, 400, "invalid_request_error", "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400,
     "invalid_request_error", "'image' are not supported"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400, "invalid_request_error",
     "web_search_20250305"),
    ({"thinking": {"type": "enabled", "budget_tokens": 500}}, 400, "invalid_request_error", "budget_tokens"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, 400,
     "invalid_request_error", "prefill"),
    ({"temperature": 1.5}, 400, "invalid_request_error", "temperature"),
    ({"model": "nobody/nothing"}, 404, "not_found_error", "nobody/nothing"),
    ({"max_tokens": 10_000}, 400, "invalid_request_error", "maximum context length"),
])
def test_errors_in_anthropic_shape(make_harness: Any, chat_tok: Any, body: dict[str, Any], status: int,
                                   kind: str, words: str) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    payload = {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}], **body}
    r = h.client.post("/v1/messages", json={k: v for k, v in payload.items() if v is not None})
    assert r.status_code == status, r.text
    err = ErrorResponse.model_validate(r.json())
    assert err.type == "error" and err.error.type == kind and words in err.error.message, r.json()
    assert h.gateway.admitted == []


@pytest.mark.parametrize(("status", "kind"), [(402, "billing_error"), (429, "rate_limit_error"),
                                              (401, "authentication_error")])
def test_gateway_refusals_in_anthropic_shape(make_harness: Any, chat_tok: Any, status: int, kind: str) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    h.gateway.refuse = APIError(status, "refused", headers={"Retry-After": "2"})
    for streamed in (False, True):
        r = post(h, stream=streamed)
        assert r.status_code == status
        assert ErrorResponse.model_validate(r.json()).error.type == kind
        assert r.headers["retry-after"] == "2"  # headers survive the reshaping
    assert h.gateway.settled == []


def test_the_key_is_read_from_x_api_key(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    seen = []
    real = h.gateway.authenticate

    async def spy(authorization: str | None) -> Any:
        seen.append(authorization)
        return await real(authorization)

    h.gateway.authenticate = spy
    post(h, headers={"x-api-key": "sk-one"})
    post(h, headers={"Authorization": "Bearer sk-two"})
    h.client.post("/v1/messages/count_tokens", headers={"x-api-key": "sk-three"},
                  json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert seen == ["Bearer sk-one", "Bearer sk-two", "Bearer sk-three"]


def test_failure_mid_stream_is_an_error_event(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    h.engine.fail_after = 3
    events = stream(h, thinking=THINK)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
    assert ErrorResponse.model_validate(events[-1]).error.type == "api_error"
    assert h.gateway.settled[-1]["status"] == "error"


def test_openapi_lists_the_new_routes(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, THOUGHT))
    paths = h.client.get("/openapi.json").json()["paths"]
    for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/responses", "/v1/responses/{response_id}",
                 "/v1/responses/{response_id}/input_items", "/tokenize", "/detokenize",
                 "/v1/chat/completions/render"):
        assert path in paths, path
