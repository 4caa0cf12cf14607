"""POST /v1/completions (legacy): raw prompt, same sampling, stop strings, echo, logprobs, streaming."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import MODEL, parse_sse, text_script


@pytest.fixture()
def h(make_harness: Any, chat_tok: Any) -> Any:
    return make_harness(text_script(chat_tok, " jumps over the lazy dog. 你好<|endoftext|>"))


def _post(h: Any, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("prompt", "The quick brown fox")
    return h.client.post("/v1/completions", json=body)


def test_text_completion(h: Any, chat_tok: Any, openai_schema: Any) -> None:
    body = _post(h, max_tokens=50, temperature=0).json()
    assert not [e.message for e in openai_schema("CreateCompletionResponse").iter_errors(body)]
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    c = body["choices"][0]
    assert c["text"] == " jumps over the lazy dog. 你好" and c["finish_reason"] == "stop"
    assert h.engine.requests[-1][0] == chat_tok.encode("The quick brown fox")  # no template
    assert body["usage"]["prompt_tokens"] == 4
    assert h.engine.requests[-1][1].temperature == 0


def test_stop_echo_length_and_token_prompt(h: Any, chat_tok: Any) -> None:
    assert _post(h, stop="lazy").json()["choices"][0]["text"] == " jumps over the "
    echoed = _post(h, echo=True, max_tokens=2).json()["choices"][0]
    assert echoed["text"] == "The quick brown fox jumps over" and echoed["finish_reason"] == "length"
    ids = chat_tok.encode("Hello")
    assert _post(h, prompt=ids).json()["usage"]["prompt_tokens"] == len(ids)
    assert _post(h, prompt=[ids[0], 10**9]).status_code == 400
    assert _post(h, suffix="x").status_code == 400


def test_logprobs(h: Any) -> None:
    c = _post(h, logprobs=2, max_tokens=4).json()["choices"][0]
    lp = c["logprobs"]
    assert "".join(lp["tokens"]) == c["text"] and len(lp["token_logprobs"]) == 4
    assert all(len(t) == 2 for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])


def test_stream(h: Any) -> None:
    full = _post(h, n=2).json()
    with h.client.stream("POST", "/v1/completions", json={"model": MODEL, "prompt": "The quick brown fox",
                                                           "stream": True, "n": 2,
                                                           "stream_options": {"include_usage": True}}) as r:
        events = parse_sse(r.read().decode())
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    assert events[-2]["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]
    texts = {0: "", 1: ""}
    for ev in events[:-2]:
        for c in ev["choices"]:
            texts[c["index"]] += c["text"]
    assert texts[0] == texts[1] == full["choices"][0]["text"]
