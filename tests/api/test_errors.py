"""Bad input gets an OpenAI-shaped 4xx naming the field: never FastAPI's 422, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from qwen3_api.api.app import Settings
from qwen3_api.errors import APIError
from tests.api.helpers import MODEL, RecordingGateway, text_script


@pytest.fixture()
def h(make_harness: Any, chat_tok: Any) -> Any:
    return make_harness(text_script(chat_tok, "Hello<|im_end|>"), max_model_len=256,
                        settings=Settings(max_n=4, max_body_bytes=20_000))


def _error(r: Any, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.parametrize(("body", "param"), [
    ({"temperature": 3}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"top_a": 2}, "top_a"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"presence_penalty": "lots"}, "presence_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": -3}, "max_completion_tokens"),
    ({"n": 0}, "n"),
    ({"n": 5}, "n"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"999999999": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5"),
    ({"stop": ["a", ""]}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0]"),
    ({"reasoning": {"effort": "high", "max_tokens": 10}}, "reasoning"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"verbosity": "loud"}, "verbosity"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
])
def test_invalid_parameter_is_400_naming_the_field(h: Any, body: dict[str, Any], param: str) -> None:
    err = _error(h.chat(**body), 400, param)
    assert err["type"] == "invalid_request_error"
    assert not h.engine.requests  # rejected before any work


def test_missing_required_fields(h: Any) -> None:
    r = h.client.post("/v1/chat/completions", json={"model": MODEL})
    assert _error(r, 400, "messages", "missing_required_parameter")
    r = h.client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert _error(r, 400, "model")


def test_malformed_json_and_non_object_body(h: Any) -> None:
    r = h.client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    _error(r, 400)
    r = h.client.post("/v1/chat/completions", json=[1, 2])
    _error(r, 400)


def test_unknown_fields_are_ignored(h: Any) -> None:
    r = h.chat(structured_outputs=True, some_vendor_field={"x": 1}, provider={"order": ["a"]}, max_tokens=3)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello"


def test_unknown_model_is_404(h: Any) -> None:
    err = _error(h.chat(model="nope/model"), 404, "model", "model_not_found")
    assert "nope/model" in err["message"]
    _error(h.client.get("/v1/models/nope/model"), 404, "model", "model_not_found")


def test_oversized_body_is_413(h: Any) -> None:
    big = "x" * 30_000
    err = _error(h.chat(messages=[{"role": "user", "content": big}]), 413, code="payload_too_large")
    assert "20000" in err["message"]
    # A chunked body (no Content-Length) is counted as it arrives.
    def chunks() -> Any:
        yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}]}'
    r = h.client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    _error(r, 413, code="payload_too_large")


def test_context_length_exceeded(h: Any) -> None:
    long_prompt = "word " * 400  # ~400 tokens > 256
    _error(h.chat(messages=[{"role": "user", "content": long_prompt}]), 400, "messages", "context_length_exceeded")
    err = _error(h.chat(max_tokens=250), 400, "max_tokens", "context_length_exceeded")
    assert "256" in err["message"]
    _error(h.client.post("/v1/completions", json={"model": MODEL, "prompt": long_prompt}), 400, "prompt",
           "context_length_exceeded")


def test_gateway_errors_keep_their_status_and_headers(make_harness: Any, chat_tok: Any) -> None:
    refuse = APIError(429, "Rate limit reached: 1 request per minute.", "rate_limit_error",
                      code="rate_limit_exceeded", headers={"Retry-After": "7", "X-RateLimit-Remaining": "0"})
    h = make_harness(text_script(chat_tok, "Hi<|im_end|>"), gateway=RecordingGateway(refuse=refuse))
    r = h.chat()
    _error(r, 429, code="rate_limit_exceeded")
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-ratelimit-remaining"] == "0"
    r = h.chat(stream=True)
    _error(r, 429)
    h.gateway.refuse = APIError(402, "Insufficient credits.", "insufficient_credits", code="insufficient_credits")
    _error(h.chat(), 402, code="insufficient_credits")
    assert not h.engine.requests and not h.gateway.settled


def test_unknown_route_and_method(h: Any) -> None:
    _error(h.client.get("/v1/nothing-here"), 404)
    _error(h.client.get("/v1/chat/completions"), 405)


@pytest.mark.parametrize(("body", "param"), [
    ({"stream": "maybe"}, "stream"), ({"stream_options": {"include_usage": "x"}}, "stream_options.include_usage"),
    ({"stop": 5}, "stop"), ({"tool_choice": "sometimes"}, "tool_choice"), ({"seed": "x"}, "seed"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content"),
    ({"chat_template_kwargs": [1]}, "chat_template_kwargs"), ({"include_reasoning": [1]}, "include_reasoning"),
])
def test_union_and_nested_fields_are_named(h: Any, body: dict[str, Any], param: str) -> None:
    err = _error(h.chat(**body), 400)
    assert err["param"] is not None and err["param"].startswith(param), err
