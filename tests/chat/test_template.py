"""The chat template renders byte-identically to transformers, and the multi-turn prefix property."""

from __future__ import annotations

import json

import pytest

from qwen3_api.chat.template import ChatTemplate, normalize_messages
from qwen3_api.errors import APIError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city <b>now</b> & later",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"], "default": None}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def _call(cid: str, name: str, args: str | dict) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


CONVERSATIONS: list[tuple[list[dict], list[dict] | None, dict]] = [
    ([{"role": "user", "content": "Hi"}], None, {}),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 你好 😀"}], None, {}),
    ([{"role": "user", "content": "Hi"}], None, {"enable_thinking": False}),
    ([{"role": "user", "content": "Hi /no_think"}], None, {"enable_thinking": True}),
    (
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Simple addition."},
            {"role": "user", "content": "times 3?"},
        ],
        None,
        {},
    ),
    (
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
            {"role": "user", "content": "and 3+3?"},
            {"role": "assistant", "content": "6", "reasoning_content": "add again"},
        ],
        None,
        {"add_generation_prompt": False},
    ),
    ([{"role": "system", "content": "You help."}, {"role": "user", "content": "Weather in Paris?"}], [WEATHER, TIME], {}),
    ([{"role": "user", "content": "Weather in Paris?"}], [WEATHER], {"enable_thinking": False}),
    (
        [
            {"role": "user", "content": "Weather in Paris and the time?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "Two tools.",
                "tool_calls": [
                    _call("call_1", "get_weather", '{"city": "Paris"}'),
                    _call("call_2", "get_time", {}),
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "10:00"},
        ],
        [WEATHER, TIME],
        {},
    ),
    (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [_call("c", "get_weather", {"city": "Rome"})]},
            {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            {"role": "assistant", "content": "Sunny in Rome."},
            {"role": "user", "content": "Thanks /think"},
        ],
        [WEATHER],
        {"enable_thinking": False},
    ),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "system", "content": "late"}], None, {}),
]


@pytest.fixture(scope="module")
def hf_tokenizer(qwen3_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir))


@pytest.mark.parametrize("case", range(len(CONVERSATIONS)))
def test_render_matches_transformers(tok, hf_tokenizer, case):
    messages, tools, kwargs = CONVERSATIONS[case]
    kwargs = dict(kwargs)
    agp = kwargs.pop("add_generation_prompt", True)
    ours = ChatTemplate(tok).render(messages, tools=tools, add_generation_prompt=agp, **kwargs)
    theirs = hf_tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=agp, tokenize=False, **kwargs
    )
    assert ours == theirs
    assert ChatTemplate(tok).encode(messages, tools=tools, add_generation_prompt=agp, **kwargs) == (
        hf_tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=agp, tokenize=True,
                                         return_dict=False, **kwargs)
    )


def test_openai_shapes_normalised(tok):
    t = ChatTemplate(tok)
    parts = [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "kind."}]},
             {"role": "user", "content": "hi"}]
    plain = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]
    assert t.render(parts) == t.render(plain)
    by_reasoning = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning": "r"}]
    by_content = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    assert t.render(by_reasoning, add_generation_prompt=False) == t.render(by_content, add_generation_prompt=False)
    assert "<think>\nr\n</think>" in t.render(by_reasoning, add_generation_prompt=False)
    # content None next to tool calls is treated as absent, as transformers does
    msgs = normalize_messages([{"role": "assistant", "content": None, "tool_calls": [_call("c", "f", "{}")]}])
    assert "content" not in msgs[0]


def test_bad_messages_are_400(tok):
    t = ChatTemplate(tok)
    with pytest.raises(APIError) as e:
        t.render([{"role": "wizard", "content": "x"}])
    assert e.value.status == 400 and e.value.param == "messages[0].role"
    with pytest.raises(APIError):
        t.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(APIError):
        t.render([])


def test_prefix_property_thinking_off(tok):
    """Thinking off: turn N's prompt + answer tokens are a prefix of turn N+1's prompt."""
    t = ChatTemplate(tok)
    history = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    for turn in range(3):
        prompt = t.encode(history, enable_thinking=False)
        answer = f"Answer {turn} 你好"
        # what the model generates after the prompt, up to and including <|im_end|>
        generated = tok.encode(answer + "<|im_end|>")
        history = history + [{"role": "assistant", "content": answer}, {"role": "user", "content": f"more {turn}"}]
        nxt = t.encode(history, enable_thinking=False)
        # the prompt's empty think block is not re-rendered in history: the shared prefix ends at the header
        header = tok.encode("<|im_start|>assistant\n")
        cut = len(prompt) - len(tok.encode("<think>\n\n</think>\n\n"))
        assert prompt[cut - len(header) : cut] == header
        assert nxt[:cut] == prompt[:cut]
        # the answer follows right after the header in the next prompt
        assert nxt[cut : cut + len(generated)] == generated


def test_prefix_property_tool_loop_thinking_on(tok):
    """Thinking on, inside one user query (a tool loop): prompt + generated tokens prefix the next prompt."""
    t = ChatTemplate(tok)
    history = [{"role": "user", "content": "Weather in Paris?"}]
    prompt = t.encode(history, tools=[WEATHER])
    reasoning, call = "I should call the tool.", {"city": "Paris"}
    text = (f"<think>\n{reasoning}\n</think>\n\n<tool_call>\n"
            f'{{"name": "get_weather", "arguments": {json.dumps(call)}}}\n</tool_call><|im_end|>')
    generated = tok.encode(text)
    history += [
        {"role": "assistant", "content": "", "reasoning_content": reasoning,
         "tool_calls": [_call("c1", "get_weather", json.dumps(call))]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
    ]
    nxt = t.encode(history, tools=[WEATHER])
    assert nxt[: len(prompt) + len(generated)] == prompt + generated


def test_thinking_on_drops_old_reasoning(tok):
    """Documented limit: after a new user query, the earlier thought is not re-rendered (no prefix)."""
    t = ChatTemplate(tok)
    history = [{"role": "user", "content": "Hi"}]
    prompt = t.encode(history)
    generated = tok.encode("<think>\nhello\n</think>\n\nHello!<|im_end|>")
    history += [{"role": "assistant", "content": "Hello!", "reasoning_content": "hello"},
                {"role": "user", "content": "Bye"}]
    nxt = t.encode(history)
    assert nxt[: len(prompt)] == prompt
    assert nxt[: len(prompt) + len(generated)] != prompt + generated
