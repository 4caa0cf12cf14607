"""The tokenizer endpoints (vLLM's /tokenize and /detokenize shapes) and the chat render: exactly the ids a chat
request runs, free, behind the keys."""

from __future__ import annotations

from typing import Any

from tests.api.helpers import MODEL, text_script

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}],
        "chat_template_kwargs": {"enable_thinking": False}}


def test_tokenize_prompt_and_back(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "Hi<|im_end|>"))
    r = h.client.post("/tokenize", json={"model": MODEL, "prompt": "hello world 你好", "return_token_strs": True})
    body = r.json()
    assert r.status_code == 200 and body["tokens"] == chat_tok.encode("hello world 你好")
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == h.engine.max_model_len
    assert body["token_strs"][:2] == ["hello", "Ġworld"]
    back = h.client.post("/detokenize", json={"model": MODEL, "tokens": body["tokens"]}).json()
    assert back == {"prompt": "hello world 你好"}
    assert h.client.post("/tokenize", json={"prompt": "x"}).json()["token_strs"] is None


def test_tokenize_messages_is_what_the_chat_request_runs(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "Hi<|im_end|>"))
    counted = h.client.post("/tokenize", json=CHAT).json()
    rendered = h.client.post("/v1/chat/completions/render", json={"model": MODEL, "max_tokens": 7, **CHAT}).json()
    assert h.client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 7, **CHAT}).status_code == 200
    ran = h.engine.requests[-1][0]
    assert counted["tokens"] == rendered["prompt_token_ids"] == ran
    assert rendered["prompt"] == chat_tok.decode(ran, skip_special_tokens=False)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert rendered["max_tokens"] == 7 and rendered["thinking"] == {"enabled": False, "budget": None}
    no_prompt = h.client.post("/tokenize", json={**CHAT, "add_generation_prompt": False}).json()
    assert not chat_tok.decode(no_prompt["tokens"], skip_special_tokens=False).endswith("assistant\n")
    assert len(h.gateway.settled) == 1  # only the chat completion was billed


def test_bad_input_is_400(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "Hi<|im_end|>"))
    cases = [("/tokenize", {"prompt": "a", "messages": CHAT["messages"]}, "prompt"),
             ("/tokenize", {}, "prompt"),
             ("/tokenize", {"prompt": "a", "model": "nobody/nothing"}, "model"),
             ("/detokenize", {"tokens": [10**9]}, "tokens[0]"),
             ("/detokenize", {"tokens": [-1]}, "tokens[0]"),
             ("/v1/chat/completions/render", {"model": MODEL, "messages": CHAT["messages"], "max_tokens": 10**6},
              "max_tokens")]
    for path, body, param in cases:
        r = h.client.post(path, json=body)
        assert r.status_code in (400, 404), (path, body, r.text)
        assert r.json()["error"]["param"] == param, r.json()
