"""Chat completions over a scripted engine: exact reasoning / content / tool-call splits, stream == non-stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from qwen3_api.api.app import Settings
from qwen3_api.api.schemas import VERBOSITY_INSTRUCTIONS
from tests.api.helpers import CHAT_TOOLS, collect_deltas, text_script

THOUGHT = "<think>\nLet me think about 你好 😊.\n</think>\n\nHello there, friend!<|im_end|>"
TOOL = ('<think>\nI should call the tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n'
        '</tool_call><|im_end|>')


@pytest.fixture()
def think(make_harness: Any, chat_tok: Any) -> Any:
    return make_harness(text_script(chat_tok, THOUGHT))


def test_reasoning_split_and_shape(think: Any, openai_schema: Any) -> None:
    r = think.chat(max_tokens=200)
    assert r.status_code == 200, r.text
    body = r.json()
    errors = [e.message for e in openai_schema("CreateChatCompletionResponse").iter_errors(body)]
    assert not errors, errors
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["content"] == "Hello there, friend!"
    assert msg["reasoning"] == msg["reasoning_content"] == "Let me think about 你好 😊."
    assert msg["refusal"] is None and "tool_calls" not in msg
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["native_finish_reason"] == "stop"
    assert choice["logprobs"] is None
    usage = body["usage"]
    n_tokens = len(think.engine.script([], None, 0))
    assert usage["completion_tokens"] == n_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + n_tokens
    assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] < n_tokens
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["cost"] > 0
    assert r.headers["x-generation-id"] == body["id"]
    # The platform saw the same id and counts, settled once.
    [settled] = think.gateway.settled
    assert settled["generation_id"] == body["id"] and settled["status"] == "completed"
    assert settled["usage"].completion_tokens == n_tokens and not settled["streamed"]


def test_stream_equals_non_stream(think: Any, openai_schema: Any) -> None:
    full = think.chat(max_tokens=200).json()
    events = think.chat_stream(max_tokens=200, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    validator = openai_schema("CreateChatCompletionStreamResponse")
    for ev in events[:-1]:
        assert not [e.message for e in validator.iter_errors(ev)], ev
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == \
        full["usage"]["completion_tokens"]
    assert usage_chunk["usage"]["completion_tokens_details"]["reasoning_tokens"] == \
        full["usage"]["completion_tokens_details"]["reasoning_tokens"]
    acc = collect_deltas(events)[0]
    msg = full["choices"][0]["message"]
    assert acc["roles"] == 1 and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert acc["content"] == msg["content"] and acc["reasoning"] == msg["reasoning"]
    assert acc["reasoning_content"] == msg["reasoning"]
    assert acc["finish_reason"] == "stop"
    assert len({ev["id"] for ev in events if isinstance(ev, dict)}) == 1
    statuses = [s["streamed"] for s in think.gateway.settled]
    assert statuses == [False, True]


def test_usage_chunk_only_when_asked(think: Any) -> None:
    events = think.chat_stream(max_tokens=50)
    assert events[-1] == "[DONE]"
    assert all("usage" not in ev for ev in events if isinstance(ev, dict))


def test_exclude_reasoning_still_counts_it(think: Any) -> None:
    for extra in ({"reasoning": {"exclude": True}}, {"include_reasoning": False}):
        body = think.chat(**extra).json()
        msg = body["choices"][0]["message"]
        assert msg["reasoning"] is None and msg["reasoning_content"] is None
        assert msg["content"] == "Hello there, friend!"
        assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
        acc = collect_deltas(think.chat_stream(**extra))[0]
        assert acc["reasoning"] == "" and acc["content"] == "Hello there, friend!"


def test_max_tokens_mid_thought_is_all_reasoning(think: Any) -> None:
    body = think.chat(max_tokens=5).json()
    c = body["choices"][0]
    assert c["finish_reason"] == "length" and c["native_finish_reason"] == "length"
    assert c["message"]["content"] is None
    assert c["message"]["reasoning"] and "<think>" not in c["message"]["reasoning"]
    assert body["usage"]["completion_tokens"] == 5
    acc = collect_deltas(think.chat_stream(max_tokens=5))[0]
    assert acc["content"] == "" and acc["reasoning"] == c["message"]["reasoning"]


@pytest.mark.parametrize("off", [{"chat_template_kwargs": {"enable_thinking": False}},
                                 {"reasoning": {"enabled": False}}, {"reasoning": {"effort": "none"}},
                                 {"reasoning_effort": "none"}])
def test_thinking_off_renders_empty_thought(make_harness: Any, chat_tok: Any, off: dict[str, Any]) -> None:
    h = make_harness(text_script(chat_tok, "Plain answer.<|im_end|>"))
    body = h.chat(**off).json()
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    msg = body["choices"][0]["message"]
    assert msg["content"] == "Plain answer." and msg["reasoning"] is None
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


def test_thinking_on_by_default(think: Any, chat_tok: Any) -> None:
    think.chat()
    prompt = chat_tok.decode(think.engine.requests[-1][0], skip_special_tokens=False)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_stop_strings_never_leak(think: Any) -> None:
    for stream in (False, True):
        if stream:
            acc = collect_deltas(think.chat_stream(stop=["friend"]))[0]
            content, reasoning, finish = acc["content"], acc["reasoning"], acc["finish_reason"]
        else:
            c = think.chat(stop=["friend"]).json()["choices"][0]
            content, reasoning, finish = c["message"]["content"], c["message"]["reasoning"], c["finish_reason"]
        # The stop string applies to the answer, not to the thought (which also contains "think").
        assert content == "Hello there, "  # exactly the text before the stop string
        assert reasoning == "Let me think about 你好 😊."
        assert finish == "stop"
    # The engine request is aborted once every choice found its stop string.
    assert think.engine.aborted


def test_n_choices_are_independent(make_harness: Any, chat_tok: Any) -> None:
    answers = [chat_tok.encode("<think>\nA\n</think>\n\nFirst.<|im_end|>"),
               chat_tok.encode("Second, without thinking.<|im_end|>")]
    h = make_harness(lambda p, params, i: answers[i])
    body = h.chat(n=2).json()
    by_index = {c["index"]: c["message"] for c in body["choices"]}
    assert by_index[0]["content"] == "First." and by_index[0]["reasoning"] == "A"
    assert by_index[1]["content"] == "Second, without thinking." and by_index[1]["reasoning"] is None
    acc = collect_deltas(h.chat_stream(n=2))
    assert acc[0]["content"] == "First." and acc[1]["content"] == "Second, without thinking."
    assert acc[0]["roles"] == acc[1]["roles"] == 1
    assert body["usage"]["completion_tokens"] == len(answers[0]) + len(answers[1])
    assert h.gateway.admitted[0]["max_tokens"] % 2 == 0  # the reservation covers both choices


def test_logprobs_one_entry_per_content_token(think: Any, chat_tok: Any) -> None:
    body = think.chat(logprobs=True, top_logprobs=3).json()
    entries = body["choices"][0]["logprobs"]["content"]
    content = body["choices"][0]["message"]["content"]
    assert "".join(e["token"] for e in entries) == content
    assert len(entries) == len(chat_tok.encode(content))
    for e in entries:
        assert e["logprob"] == -0.25 and len(e["top_logprobs"]) == 3
        assert bytes(e["bytes"]).decode() == e["token"]
    acc = collect_deltas(think.chat_stream(logprobs=True, top_logprobs=3))[0]
    assert [e["token"] for e in acc["logprobs"]] == [e["token"] for e in entries]


def test_tool_calls_parsed_and_streamed(make_harness: Any, chat_tok: Any, openai_schema: Any) -> None:
    h = make_harness(text_script(chat_tok, TOOL))
    body = h.chat(tools=CHAT_TOOLS).json()
    assert not [e.message for e in openai_schema("CreateChatCompletionResponse").iter_errors(body)]
    c = body["choices"][0]
    assert c["finish_reason"] == "tool_calls" and c["native_finish_reason"] == "stop"
    calls = c["message"]["tool_calls"]
    assert [tc["function"]["name"] for tc in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert all(tc["id"].startswith("call_") and tc["type"] == "function" for tc in calls)
    assert c["message"]["content"] is None and c["message"]["reasoning"] == "I should call the tool."
    acc = collect_deltas(h.chat_stream(tools=CHAT_TOOLS))[0]
    assert acc["finish_reason"] == "tool_calls"
    streamed = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
    assert [s["name"] for s in streamed] == ["get_weather", "get_time"]
    assert [json.loads(s["arguments"]) for s in streamed] == [json.loads(tc["function"]["arguments"])
                                                              for tc in calls]


def test_tool_choice_none_masks_the_call_token(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "No tools needed.<|im_end|>"))
    h.chat(tools=CHAT_TOOLS, tool_choice="none")
    params = h.engine.requests[-1][1]
    constraint = params.constraint_factory()
    vocab_words = (chat_tok.model_vocab_size + 31) // 32
    mask = torch.full((1, vocab_words), -1, dtype=torch.int32)
    for tid in chat_tok.encode("Fine."):  # the answer is free, but <tool_call> can never be sampled
        constraint.fill_bitmask(mask, 0)
        word, bit = divmod(chat_tok.tool_call_start_id, 32)
        assert not (int(mask[0, word]) >> bit) & 1
        constraint.accept_token(tid)
        mask.fill_(-1)
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert "get_weather" in prompt  # the tools are still described to the model


@pytest.mark.parametrize("level", ["low", "high"])
def test_verbosity_appends_a_documented_instruction(make_harness: Any, chat_tok: Any, level: str) -> None:
    h = make_harness(text_script(chat_tok, "Ok.<|im_end|>"))
    h.chat(verbosity=level, messages=[{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": "hi"}])
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert f"You are terse.\n\n{VERBOSITY_INSTRUCTIONS[level]}<|im_end|>" in prompt
    h.chat(verbosity=level)
    prompt = chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert prompt.startswith(f"<|im_start|>system\n{VERBOSITY_INSTRUCTIONS[level]}<|im_end|>")
    h.chat(verbosity="medium")
    medium = h.engine.requests[-1][0]
    h.chat()
    assert medium == h.engine.requests[-1][0]


def test_sampling_fields_reach_the_engine(think: Any) -> None:
    think.chat(temperature=0.3, top_p=0.9, top_k=5, min_p=0.05, top_a=0.1, repetition_penalty=1.1,
               frequency_penalty=0.5, presence_penalty=-0.5, seed=42, max_completion_tokens=7, max_tokens=99,
               logit_bias={"100": 5})
    p = think.engine.requests[-1][1]
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.top_a) == (0.3, 0.9, 5, 0.05, 0.1)
    assert (p.repetition_penalty, p.frequency_penalty, p.presence_penalty) == (1.1, 0.5, -0.5)
    assert p.seed == 42 and p.max_tokens == 7 and p.logit_bias == {100: 5.0}
    think.chat()
    p = think.engine.requests[-1][1]
    # Unset fields take the catalog's default_parameters; max_tokens defaults to the context left.
    assert (p.temperature, p.top_p, p.top_k) == (0.6, 0.95, 20)
    assert p.max_tokens == think.engine.max_model_len - len(think.engine.requests[-1][0])


def test_history_accepts_reasoning_and_tool_turns(think: Any) -> None:
    messages = [{"role": "developer", "content": [{"type": "text", "text": "Be nice."}]},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "reasoning_content": "need tool",
                 "tool_calls": [{"id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = think.chat(messages=messages, tools=CHAT_TOOLS)
    assert r.status_code == 200, r.text


def test_mid_stream_error_is_one_error_event(think: Any) -> None:
    think.engine.fail_after = 3
    events = think.chat_stream()
    # One error event, then [DONE] (as vLLM ends every stream): a client waiting for [DONE] stops waiting.
    assert events[-1] == "[DONE]" and sum(1 for e in events if isinstance(e, dict) and "error" in e) == 1
    err = events[-2]["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "server_error"
    assert [s["status"] for s in think.gateway.settled] == ["error"]
    r = think.chat()
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"


def test_keepalive_comments_during_a_long_prefill(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "Hi.<|im_end|>"), settings=Settings(keepalive_s=0.05),
                     first_token_delay_s=0.3)
    events = h.chat_stream()
    assert events[1] == ":" and events[-1] == "[DONE]"
    assert collect_deltas(events)[0]["content"] == "Hi."
