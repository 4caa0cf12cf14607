"""Input a fault soak found giving 500s: lone UTF-16 surrogates anywhere text enters, empty or batched legacy
prompts. Each is a 400 in the OpenAI error shape naming the field; nothing reaches the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qwen3_api.api.text_guard import find_surrogate, surrogate_error
from tests.api.helpers import MODEL, text_script

TOOL = {"type": "function", "function": {"name": "f", "description": "d",
                                         "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
LONE = "x\ud800y"


@pytest.fixture()
def h(make_harness: Any, chat_tok: Any) -> Any:
    return make_harness(text_script(chat_tok, "Hello<|im_end|>"), max_model_len=256)


def _post(h: Any, path: str, body: dict[str, Any]) -> Any:
    # json.dumps writes a lone surrogate as the escape "\ud800", as a client's encoder would.
    return h.client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def _error(r: Any, param: str | None) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param, body
    return body["error"]


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(("body", "param"), [
    (_chat(messages=[{"role": "user", "content": LONE}]), "messages[0].content"),
    (_chat(messages=[{"role": "system", "content": LONE}, {"role": "user", "content": "hi"}]),
     "messages[0].content"),
    (_chat(messages=[{"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": LONE}]}]),
     "messages[0].content[1].text"),
    (_chat(messages=[{"role": "user", "content": "hi", "name": LONE}]), "messages[0].name"),
    (_chat(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": LONE}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}]), "messages[1].tool_calls[0].function.arguments"),
    (_chat(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a", "reasoning_content": LONE}]),
     "messages[1].reasoning_content"),
    (_chat(tools=[{**TOOL, "function": {**TOOL["function"], "description": LONE}}]), "tools[0].function.description"),
    (_chat(tools=[{**TOOL, "function": {**TOOL["function"], "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "description": LONE}}}}}]),
     "tools[0].function.parameters.properties.x.description"),
    (_chat(tools=[{**TOOL, "function": {**TOOL["function"], "parameters": {
        "type": "object", "properties": {"k\udc00": {"type": "string"}}}}}]),
     "tools[0].function.parameters.properties.k\\udc00"),  # a key: named by its escape
    (_chat(response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {
        "type": "object", "properties": {"a": {"enum": [LONE]}}}}}), "response_format.json_schema.schema.properties.a.enum[0]"),
    (_chat(stop=LONE), "stop"),
    (_chat(stop=["ok", LONE]), "stop[1]"),
    (_chat(model=LONE), "model"),  # its 404 would echo the name: the error body itself could not be encoded
    (_chat(user=LONE), "user"),
    (_chat(some_vendor_extra={"deep": [[{"x": LONE}]]}), "some_vendor_extra.deep[0][0].x"),  # ignored, still refused
    (_chat(stream=True, messages=[{"role": "user", "content": LONE}]), "messages[0].content"),
])
def test_lone_surrogate_in_chat_is_400_naming_the_field(h: Any, body: dict[str, Any], param: str) -> None:
    err = _error(_post(h, "/v1/chat/completions", body), param)
    assert "surrogate" in err["message"] and "U+D" in err["message"]
    assert not h.engine.requests


@pytest.mark.parametrize(("prompt", "param"), [(LONE, "prompt"), ([LONE], "prompt[0]")])
def test_lone_surrogate_in_legacy_prompt(h: Any, prompt: Any, param: str) -> None:
    _error(_post(h, "/v1/completions", {"model": MODEL, "prompt": prompt}), param)
    assert not h.engine.requests


def test_raw_surrogate_bytes_and_whole_body_string(h: Any) -> None:
    # Python's JSON decoder also turns the raw (CESU-8 style) bytes of a surrogate into one.
    raw = b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "a\xed\xa0\x80b"}]}'
    r = h.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    _error(r, "messages[0].content")
    r = h.client.post("/v1/chat/completions", content=b'"\\udfff"', headers={"content-type": "application/json"})
    _error(r, None)


def test_valid_text_with_surrogate_escapes_passes(h: Any) -> None:
    # A pair is one character; an escaped backslash before "ud800" is plain text: neither is refused.
    for content in ("smile \ud83d\ude00", "\\ud800 is how JSON writes a surrogate"):
        r = _post(h, "/v1/chat/completions", _chat(messages=[{"role": "user", "content": content}], max_tokens=2))
        assert r.status_code == 200, r.text


def test_surrogate_check_helpers() -> None:
    assert find_surrogate({"a": [1, {"b": "ok", "c": "\udc80"}]}) == (("a", 1, "c"), "\udc80")
    assert find_surrogate({"a": "\U0001f600"}) is None
    deep: Any = LONE
    for _ in range(5000):  # iterative: no recursion limit
        deep = [deep]
    assert find_surrogate(deep) is not None
    assert surrogate_error(b'{"a": "\\ud83d\\ude00"}') is None
    assert surrogate_error(b'{"a": "\\ud800') is None  # bad JSON: the route's own 400
    err = surrogate_error(b'{"a": ["\\ud800"]}')
    assert err is not None and err.status == 400 and err.param == "a[0]"


@pytest.mark.parametrize("prompt", [[], [""], "", [[]], [[1, 2]], ["a", "b"], [[1], [2]], [-1], [1, -5],
                                    [10**30], [151936], [1, "a"], {"text": "x"}, None])
def test_bad_legacy_prompts_are_400(h: Any, prompt: Any) -> None:
    r = h.client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
    err = _error(r, r.json()["error"]["param"])
    assert err["param"] is not None and err["param"].startswith("prompt"), err
    assert not h.engine.requests


def test_prompt_error_messages_say_what_is_wrong(h: Any) -> None:
    def message(prompt: Any) -> str:
        return h.client.post("/v1/completions", json={"model": MODEL, "prompt": prompt}).json()["error"]["message"]

    assert "must not be empty" in message([])
    assert "batch" in message([[1, 2]]) and "batch" in message(["a", "b"])
    neg = h.client.post("/v1/completions", json={"model": MODEL, "prompt": [5, -1]}).json()["error"]
    assert neg["param"] == "prompt[1]" and "greater than or equal to 0" in neg["message"]  # not "a valid string"
    assert "outside the vocabulary" in message([151936])


def test_good_legacy_prompts_still_work(h: Any, chat_tok: Any) -> None:
    for prompt in ("Hello", ["Hello"], chat_tok.encode("Hello"), [0]):
        r = h.client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
        assert r.status_code == 200, r.text


def test_top_p_zero_is_greedy(h: Any) -> None:
    # OpenAI's schema takes top_p 0; the engine's nucleus needs p > 0, so the server sends top_k 1 instead.
    r = h.chat(top_p=0, max_tokens=2)
    assert r.status_code == 200, r.text
    params = h.engine.requests[-1][1]
    assert params.top_k == 1 and params.top_p == 1.0
    r = h.client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "top_p": 0.0, "max_tokens": 2})
    assert r.status_code == 200 and h.engine.requests[-1][1].top_k == 1
    assert h.chat(top_p=0.5, max_tokens=2).status_code == 200 and h.engine.requests[-1][1].top_p == 0.5


def test_tool_schema_llguidance_cannot_read_is_never_a_500(h: Any) -> None:
    # The fuzzer's find: an integer past 64 bits in a tool's schema made llguidance raise inside the tool grammar.
    odd = {"type": "function", "function": {"name": "odd", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer", "maximum": -10**29}}}}}
    strict = {"type": "function", "function": {**TOOL["function"], "strict": True}}
    # A non-strict tool falls back to "any arguments object", with or without a strict one beside it.
    assert h.chat(tools=[strict, odd], max_tokens=2).status_code == 200
    assert h.chat(tools=[odd], tool_choice="required", max_tokens=2).status_code == 200
    # A strict one cannot be honoured: the client's error, naming the tools.
    odd_strict = {"type": "function", "function": {**odd["function"], "strict": True}}
    err = _error(h.chat(tools=[odd_strict], max_tokens=2), "tools")
    assert "unsupported schema" in err["message"]
