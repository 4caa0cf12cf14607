"""The chat layer on the demo model's own small tokenizer (what `qwen3-api serve` without --model uses)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from qwen3_api.chat.constraint import constraint_factory
from qwen3_api.chat.output import ChoiceProcessor
from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.demo.tokenizer import write_demo_tokenizer
from tests.chat.helpers import random_walk, structural_bias


class Item(BaseModel):
    label: str
    count: int | None


class Order(BaseModel):
    items: list[Item]
    note: str | None


@pytest.fixture(scope="module")
def demo_tok(tmp_path_factory) -> ChatTokenizer:
    out = tmp_path_factory.mktemp("demo-tok")
    write_demo_tokenizer(out)
    return ChatTokenizer.from_dir(out, model_vocab_size=None)


def test_demo_tokenizer_ids_and_bytes(demo_tok):
    assert demo_tok.vocab_size < 151_669  # really another vocabulary: nothing is hard-coded
    for tid in (demo_tok.think_start_id, demo_tok.think_end_id, demo_tok.tool_call_start_id, demo_tok.eos_token_id):
        assert tid is not None
    text = "Hello 你好 😀 {\"a\": 1}"
    ids = demo_tok.encode(text)
    assert b"".join(demo_tok.bytes_of(i) for i in ids).decode() == text == demo_tok.decode(ids)


@pytest.mark.parametrize("seed", range(3))
def test_demo_random_model_returns_valid_json(demo_tok, seed):
    schema = to_strict_json_schema(Order)
    prompt = ChatTemplate(demo_tok).encode([{"role": "user", "content": "order"}], enable_thinking=False)
    rf = {"type": "json_schema", "json_schema": {"name": "Order", "schema": schema, "strict": True}}
    factory = constraint_factory(demo_tok, prompt_ids=prompt, response_format=rf)
    tokens, reason = random_walk(factory(), demo_tok, seed, 400, structural_bias(demo_tok))
    proc = ChoiceProcessor(demo_tok, prompt_ids=prompt)
    proc.feed(tokens)
    final = proc.finish(reason)
    assert final.finish_reason == "stop" and final.reasoning is None
    jsonschema.validate(json.loads(final.content), schema)
