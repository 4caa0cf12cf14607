"""The 2507 checkpoints through the chat API (scripted engine, the variants' real templates and tokenizer).

Thinking-2507's generation prompt already opens the thought, so the model writes only ``...</think>``: all of it
before ``</think>`` is reasoning. Instruct-2507 never thinks: its template has no switch, so enable_thinking,
reasoning_effort and a budget are no-ops and ``reasoning`` stays empty.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from qwen3_api.api.app import Settings
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.demo.tiny import make_tiny_model
from tests.api.helpers import CHAT_TOOLS, collect_deltas, text_script


@functools.cache
def _tok(model_dir: Path) -> ChatTokenizer:
    return ChatTokenizer.from_dir(model_dir)


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    return {v: make_tiny_model(root / v, variant=v, tokenizer_dir=qwen3_tokenizer_dir, layers=1, hidden=32,
                               experts=4, heads=2, kv_heads=1, moe_intermediate=16, intermediate=32)
            for v in ("2507-thinking", "2507-instruct")}


def _harness(make_harness: Any, model_dir: Path, text: str) -> Any:
    tok = _tok(model_dir)
    return make_harness(text_script(tok, text), settings=Settings(model_path=str(model_dir)))


def _both(h: Any, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    whole = h.chat(**body)
    assert whole.status_code == 200, whole.text
    return whole.json()["choices"][0], collect_deltas(h.chat_stream(**body))[0]


CASES = {
    "text": ("Weighing the options.\n</think>\n\nParis.<|im_end|>", {}),
    "tools": ("I need the weather tool.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
              "{\"city\": \"Paris\"}}\n</tool_call><|im_end|>", {"tools": CHAT_TOOLS}),
    "json_schema": ("Answer in JSON.\n</think>\n\n{\"city\": \"Paris\"}<|im_end|>", {"response_format": {
        "type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_thinking_2507_everything_before_think_end_is_reasoning(make_harness, variant_dirs, case) -> None:
    text, extra = CASES[case]
    h = _harness(make_harness, variant_dirs["2507-thinking"], text)
    whole, streamed = _both(h, max_tokens=200, **extra)
    prompt = h.engine.requests[-1][0]
    tok = _tok(variant_dirs["2507-thinking"])
    assert tok.decode(prompt, skip_special_tokens=False).endswith("<|im_start|>assistant\n<think>\n")
    msg = whole["message"]
    assert msg["reasoning"] == msg["reasoning_content"] == text.split("\n</think>")[0]
    assert streamed["reasoning"] == msg["reasoning"] and streamed["content"] == (msg["content"] or "")
    assert "<think>" not in (msg["content"] or "") and "</think>" not in (msg["content"] or "")
    if case == "tools":
        assert whole["finish_reason"] == streamed["finish_reason"] == "tool_calls"
        assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
        assert [c["name"] for c in streamed["tool_calls"].values()] == ["get_weather"]
    elif case == "json_schema":
        assert json.loads(msg["content"]) == {"city": "Paris"}
    else:
        assert msg["content"] == "Paris."


def test_thinking_2507_cut_mid_thought_is_all_reasoning(make_harness, variant_dirs) -> None:
    h = _harness(make_harness, variant_dirs["2507-thinking"], CASES["text"][0])
    whole, streamed = _both(h, max_tokens=3)
    assert whole["finish_reason"] == "length" and whole["message"]["content"] is None
    assert whole["message"]["reasoning"] and streamed["reasoning"] == whole["message"]["reasoning"]


@pytest.mark.parametrize("extra", [{}, {"chat_template_kwargs": {"enable_thinking": True}},
                                   {"chat_template_kwargs": {"enable_thinking": False}},
                                   {"reasoning_effort": "high"}, {"reasoning": {"max_tokens": 2}},
                                   {"tools": CHAT_TOOLS, "tool_choice": "required"}])
def test_instruct_2507_switch_is_a_no_op(make_harness, variant_dirs, extra) -> None:
    answer = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>" \
        if "tools" in extra else "Plain answer, no thought.<|im_end|>"
    h = _harness(make_harness, variant_dirs["2507-instruct"], answer)
    whole, streamed = _both(h, max_tokens=100, **extra)
    msg = whole["message"]
    assert msg["reasoning"] is None and streamed["reasoning"] == ""
    usage = h.chat(max_tokens=100, **extra).json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    tok = _tok(variant_dirs["2507-instruct"])
    prompt = tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt
    if "tools" in extra:
        assert whole["finish_reason"] == "tool_calls" and msg["tool_calls"][0]["function"]["name"] == "get_weather"
        # No thought to wait for: the grammar holds from the first token (no <think>, no end before the call).
        constraint = h.engine.requests[-1][1].constraint_factory()
        assert constraint.state.value == "answer"
    else:
        assert msg["content"] == streamed["content"] == "Plain answer, no thought."


def test_instruct_2507_never_shows_a_stray_think_tag(make_harness, variant_dirs) -> None:
    """A model that writes <think> anyway: tags never reach content and nothing becomes reasoning."""
    h = _harness(make_harness, variant_dirs["2507-instruct"], "<think>\nodd\n</think>\n\nAnswer.<|im_end|>")
    whole, streamed = _both(h, max_tokens=100)
    assert whole["message"]["reasoning"] is None and "<think>" not in whole["message"]["content"]
    assert streamed["content"] == whole["message"]["content"]
